package main

import (
	"flag"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strings"
)

// flagGroup lists flags under a heading of their own in a command's help (serve's --dev flags).
type flagGroup struct {
	heading string
	names   []string
}

// commandUsage is a command's help: usage line, summary, then its flags, grouped.
func commandUsage(w io.Writer, full string, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: %s %s\n\n%s\n", full, cmd.synopsis, cmd.summary)
	grouped := map[string]bool{}
	for _, g := range cmd.flagGroups {
		for _, n := range g.names {
			grouped[n] = true
		}
	}
	var rest []*flag.Flag
	fs.VisitAll(func(f *flag.Flag) {
		if !grouped[f.Name] {
			rest = append(rest, f)
		}
	})
	if len(rest) > 0 {
		fmt.Fprintln(w, "\nFlags:")
		for _, f := range rest {
			printFlag(w, f)
		}
	}
	for _, g := range cmd.flagGroups {
		fmt.Fprintf(w, "\n%s\n", g.heading)
		names := slices.Sorted(slices.Values(g.names))
		for _, n := range names {
			if f := fs.Lookup(n); f != nil {
				printFlag(w, f)
			}
		}
	}
}

// printFlag writes one flag as Go's flag.PrintDefaults does, but spelled --name: the form every
// example and message of this command uses (the flag package accepts both).
func printFlag(w io.Writer, f *flag.Flag) {
	name, usage := flag.UnquoteUsage(f)
	line := "  --" + f.Name
	if name != "" {
		line += " " + name
	}
	line += "\n    \t" + strings.ReplaceAll(usage, "\n", "\n    \t")
	if !isZeroDefault(f) {
		if fmt.Sprintf("%T", f.Value) == "*flag.stringValue" {
			line += fmt.Sprintf(" (default %q)", f.DefValue)
		} else {
			line += fmt.Sprintf(" (default %v)", f.DefValue)
		}
	}
	fmt.Fprintln(w, line)
}

// isZeroDefault reports whether the flag's default is its type's zero value (not worth
// printing), as the flag package decides it.
func isZeroDefault(f *flag.Flag) (zero bool) {
	defer func() {
		if recover() != nil {
			zero = false
		}
	}()
	t := reflect.TypeOf(f.Value)
	var z reflect.Value
	if t.Kind() == reflect.Pointer {
		z = reflect.New(t.Elem())
	} else {
		z = reflect.Zero(t)
	}
	v, ok := z.Interface().(flag.Value)
	return ok && f.DefValue == v.String()
}

// flagNameRE finds the flag names the flag package writes with one dash in its errors.
var flagNameRE = regexp.MustCompile(`(flag provided but not defined: |flag needs an argument: |for flag )-([A-Za-z0-9])`)

// dashes rewrites a flag package error to name the flag as --name.
func dashes(msg string) string { return flagNameRE.ReplaceAllString(msg, "$1--$2") }
