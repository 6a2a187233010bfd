// filter-go: the reference side of the filter conformance test. For each file
// named on the command line it parses the content with containerd's own filters
// package and prints "<file> ERR <hex of the message>" or "<file> OK <bits>",
// one bit per record of the fixed set below (match or not). filter-diff.c prints
// the same for thinsnap's parser; the test compares the two outputs. Files that
// hold a NUL byte are skipped (a C message cannot carry it).
package main

import (
	"bytes"
	"fmt"
	"io/ioutil"
	"os"
	"strings"

	"github.com/containerd/containerd/filters"
	"github.com/sirupsen/logrus"
)

type record struct {
	name, parent, kind string
	labels             map[string]string
}

// Keep in step with filter-diff.c.
var records = []record{
	{"sha256:abc", "", "committed", map[string]string{"foo": "true", "containerd.io/gc.root": "2026-11-23T00:00:00Z", "more complex label": "v\u00e9"}},
	{"default/1/extract", "sha256:abc", "active", nil},
	{"view", "sha256:abc", "view", map[string]string{"foo": "true"}},
	{"A12", "", "active", map[string]string{"a b": "x\ty", "k.l": "42"}},
}

// The same adaptor as containerd's snapshots/storage adaptSnapshot.
func adapt(r record) filters.Adaptor {
	return filters.AdapterFunc(func(fp []string) (string, bool) {
		if len(fp) == 0 {
			return "", false
		}
		switch fp[0] {
		case "kind":
			return r.kind, true
		case "name":
			return r.name, true
		case "parent":
			return r.parent, true
		case "labels":
			if len(r.labels) == 0 {
				return "", false
			}
			v, ok := r.labels[strings.Join(fp[1:], ".")]
			return v, ok
		}
		return "", false
	})
}

func main() {
	logrus.SetOutput(ioutil.Discard)
	for _, path := range os.Args[1:] {
		b, err := ioutil.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if bytes.IndexByte(b, 0) >= 0 {
			fmt.Printf("%s SKIP\n", path)
			continue
		}
		f, err := filters.Parse(string(b))
		if err != nil {
			fmt.Printf("%s ERR %x\n", path, []byte(err.Error()))
			continue
		}
		bits := ""
		for _, r := range records {
			if f.Match(adapt(r)) {
				bits += "1"
			} else {
				bits += "0"
			}
		}
		fmt.Printf("%s OK %s\n", path, bits)
	}
}
