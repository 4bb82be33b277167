package config

import (
	"errors"
	"os"
	"strings"
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
	switch {
	case inline != "":
		return inline
	case file != "":
		p := c.rel(file)
		st, err := os.Stat(p)
		if err != nil {
			c.fail(field+"."+base+"_file", "cannot read: %v", errors.Unwrap(err))
			return ""
		}
		if st.Mode().Perm()&0o077 != 0 {
			c.warn(field+"."+base+"_file", "%s is readable by group or others (mode %v); chmod 600 it", p, st.Mode().Perm())
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
