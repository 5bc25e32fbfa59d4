// Package lint pins the linters `make lint` runs (goimports and staticcheck,
// as tool directives in this go.mod), apart from the product's go.mod so
// that bin/certagent lists only what it links.
package lint
