// Package tools holds the build tools of certagent's packaging, pinned by
// this directory's go.mod (see its tool line); packaging/nfpm.sh runs them.
// The package itself is empty: it lets `go list ./...` see the module.
package tools
