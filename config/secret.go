package config

import (
	"errors"
	"os"
	"strings"
	"syscall"
)

// secret resolves exactly one of inline / file / env for the key named base under field.
func (c *checker) secret(field, base, inline, file, env string, required bool) string {
	n := 0
	for _, s := range []string{inline, file, env} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		c.fail(field+"."+base, "give exactly one of %s, %s_file, %s_env", base, base, base)
		return ""
	}
	if !c.resolves(field) {
		if n == 0 && required {
			c.fail(field+"."+base, "required (or %s_file / %s_env)", base, base)
		}
		return ""
	}
	switch {
	case inline != "":
		return inline
	case file != "":
		p := c.rel(file)
		if !c.private(field+"."+base+"_file", p) {
			return ""
		}
		b, err := readBounded(p)
		if err != nil {
			c.fail(field+"."+base+"_file", "cannot read: %v", err)
			return ""
		}
		s := strings.TrimSpace(string(b))
		clear(b)
		if s == "" {
			c.fail(field+"."+base+"_file", "file is empty")
		}
		return s
	case env != "":
		v, ok := os.LookupEnv(env)
		v = strings.TrimSpace(v)
		if !ok || v == "" {
			c.fail(field+"."+base+"_env", "environment variable %s is not set or empty", env)
		}
		return v
	}
	if required {
		c.fail(field+"."+base, "required (or %s_file / %s_env)", base, base)
	}
	return ""
}

// resolves reports whether the secrets under field are read (LoadPrefixSecrets reads only the
// prefixes' credentials).
func (c *checker) resolves(field string) bool {
	return !c.opts.prefixSecretsOnly || strings.HasPrefix(field, "prefix[")
}

// private checks that the file at p, which holds a secret, exists, and warns when someone other
// than the proxy may read it: others, or a group that is not the process's own (or any group
// that may write it). The shipped layout (root:xksproxy 0640, the service running with group
// xksproxy) draws no warning. It reports false when the file cannot be read.
func (c *checker) private(field, p string) bool {
	st, err := os.Stat(p)
	if err != nil {
		c.fail(field, "cannot read: %v", errors.Unwrap(err))
		return false
	}
	perm := st.Mode().Perm()
	if perm&0o007 != 0 || perm&0o020 != 0 || perm&0o040 != 0 && !ownGroup(st) {
		c.warn(field, "%s is readable by group or others (mode %v); chmod 600 it", p, perm)
	}
	return true
}

// ownGroup reports whether the file's group is the process's own (effective) group.
func ownGroup(st os.FileInfo) bool {
	s, ok := st.Sys().(*syscall.Stat_t)
	return ok && int(s.Gid) == os.Getegid()
}
