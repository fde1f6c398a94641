//go:build tools

// Package tools pins the main packages the suites build for go mod tidy.
package tools

import (
	_ "github.com/argoproj/argo-cd/v3/cmd"
	_ "github.com/fluxcd/kustomize-controller"
	_ "github.com/fluxcd/source-controller"
)
