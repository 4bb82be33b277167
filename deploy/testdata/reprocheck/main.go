// Command reprocheck stands in for ./cmd/xksproxy in the reproducible-build
// test until the real binary exists: it links the same heavy dependencies.
package main

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/xksproxy/xksproxy/certs"
)

func main() {
	m := certs.NewMetrics(prometheus.NewRegistry())
	fmt.Println(m != nil)
}
