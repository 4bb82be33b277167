//go:build !linux

package main

import "os/exec"

func stopWithParent(*exec.Cmd) {}

func lockFile(string) (func(), error) { return func() {}, nil }
