// Command etcd is etcd's own server entry point (the root main.go of go.etcd.io/etcd),
// repeated here because that root module is not meant to be required by others.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
