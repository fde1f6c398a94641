// Command registry is distribution v3.0.0's cmd/registry with only the filesystem storage driver
// (quickstart.sh's configuration) and no auth, proxy or storage middleware plugins.
package main

import (
	"github.com/distribution/distribution/v3/registry"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
)

func main() {
	// RootCmd's commands exit non-zero themselves on failure
	_ = registry.RootCmd.Execute()
}
