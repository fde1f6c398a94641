// Command coredns is CoreDNS v1.15.0's main package with only the plugins node/coredns.yaml's
// Corefile uses: a Corefile naming another plugin fails to start ("unknown directive").
package main

import (
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"

	"github.com/coredns/coredns/coremain"
)

func main() {
	coremain.Run()
}
