//go:build tools

// Package tools pins the CoreDNS server built by ../build.sh, so that `go mod tidy` keeps
// its dependencies in go.sum.
package tools

import _ "github.com/coredns/coredns"
