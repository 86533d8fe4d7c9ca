// Command pause is the sandbox process of every pod on the test cluster: it holds the pod's
// namespaces open, reaps orphans (it is PID 1 of the pod), and exits on SIGINT or SIGTERM, as
// registry.k8s.io/pause does. Built here because the cluster has no registry to pull from.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	children := make(chan os.Signal, 16)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			os.Exit(0)
		case <-children:
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
