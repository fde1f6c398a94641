//go:build tools

// Package tools pins Argo CD's CLI main package for go mod tidy.
package tools

import _ "github.com/argoproj/argo-cd/v3/cmd"
