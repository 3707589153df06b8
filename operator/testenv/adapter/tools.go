//go:build tools

// Package tools pins prometheus-adapter (the custom metrics API server the hpa
// autoscaling backend reads), built by ../build.sh, so that `go mod tidy` keeps
// its dependencies in go.sum.
package tools

import (
	_ "sigs.k8s.io/prometheus-adapter/cmd/adapter"
)
