// Command kstatus prints what Flux's kstatus library (github.com/fluxcd/cli-utils, the fork
// kustomize-controller uses for health checks) computes for each object in the JSON or YAML
// files named on the command line: one JSON line per object with its status and message.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kstatus FILE...")
		os.Exit(2)
	}
	for _, path := range os.Args[1:] {
		raw, err := os.ReadFile(path)
		if err != nil {
			fail(err)
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
		// UnmarshalJSON keeps integers int64, as the API machinery reads them
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(js); err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
		res, err := status.Compute(obj)
		if err != nil {
			fail(fmt.Errorf("%s: %w", path, err))
		}
		line, _ := json.Marshal(map[string]string{
			"file": path, "status": res.Status.String(), "message": res.Message,
		})
		fmt.Println(string(line))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(1)
}
