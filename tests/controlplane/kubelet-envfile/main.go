// kubelet-envfile runs the kubelet's own env-file parser (EnvFiles feature,
// env[].valueFrom.fileKeyRef) on a file, so tests can check that what we write is read back the
// way the kubelet reads it.
//
// Usage: kubelet-envfile FILE KEY [KEY...]
//
// For each KEY it calls env.ParseEnv(FILE, KEY), the function kubelet_pods.go calls for a
// fileKeyRef, and prints one JSON object {"KEY": "value", ...} on stdout, keys in the order given
// (a repeated KEY is printed once). A key that is not in the file prints as "": ParseEnv returns
// "" for it, and the kubelet treats any "" value, an empty quoted one included, as a missing key.
// On a parse error it prints the error on stderr and exits 1.
//
// The kubelet has no size limit of its own on an env file. The only limit is ParseEnv's
// bufio.Scanner, which fails on a line of 64 KiB or more, so running ParseEnv covers it.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	env "k8s.io/kubernetes/pkg/kubelet/util/env"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: kubelet-envfile FILE KEY [KEY...]")
		os.Exit(2)
	}
	file, keys := os.Args[1], os.Args[2:]
	var out bytes.Buffer
	out.WriteByte('{')
	seen := map[string]bool{}
	for _, key := range keys {
		if seen[key] {
			continue
		}
		seen[key] = true
		value, err := env.ParseEnv(file, key)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if len(seen) > 1 {
			out.WriteByte(',')
		}
		k, _ := json.Marshal(key)
		v, _ := json.Marshal(value)
		out.Write(k)
		out.WriteByte(':')
		out.Write(v)
	}
	out.WriteString("}\n")
	os.Stdout.Write(out.Bytes())
}
