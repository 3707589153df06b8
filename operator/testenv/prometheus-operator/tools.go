//go:build tools

// Package tools pins the prometheus-operator commands built by ../build.sh, so that
// `go mod tidy` keeps their dependencies in go.sum.
package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/cmd/operator"
	_ "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader"
)
