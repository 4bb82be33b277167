package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/pprof"

	"github.com/xksproxy/xksproxy/internal/cli"
	"github.com/xksproxy/xksproxy/internal/demo"
)

func runDemo(ctx context.Context, d cli.DemoFlags, stdout, stderr io.Writer) error {
	log, err := cli.NewLogger(stderr, d.LogLevel, "text")
	if err != nil {
		return err
	}
	o := demo.Options{Keys: d.Keys, Replicas: d.Replicas, RPS: d.RPS, Warmup: d.Warmup, Shadow: d.Shadow,
		Probation: d.Probation, Tail: d.Tail, Logger: log}
	if d.NoShadow {
		o.Shadow = -1 // demo.Options: negative is no shadowing
	}
	o.Progress = stdout
	if d.JSON {
		o.Progress = stderr // stdout carries the one JSON object
	}
	if d.CPUProfile != "" {
		f, err := os.Create(d.CPUProfile)
		if err != nil {
			return fmt.Errorf("demo: --cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("demo: --cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := demo.Run(ctx, o)
	if err != nil {
		return err
	}
	if d.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.WriteText(stdout)
	}
	if !rep.OK() {
		return errors.New("demo: the migration did not meet its bar (see the report)")
	}
	return nil
}
