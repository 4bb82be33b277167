// Command kmsemu runs the Cosmian KMS emulator (package cosmian/kmsemu) as a standalone server,
// for trying the XKS proxy by hand. It is a test tool, not a KMS.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kmsemu:", err)
		os.Exit(2)
	}
}
