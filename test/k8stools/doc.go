// Package k8stools pins the real Kubernetes binaries certagent's tests run
// against (tools.go, behind the tools build tag; build.sh builds them).
// This file, without the tag, lets `go list ./...` see the module.
package k8stools
