//go:build tools

// Package tools pins the controller's main package for go mod tidy.
package tools

import _ "github.com/fluxcd/kustomize-controller"
