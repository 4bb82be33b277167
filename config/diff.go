package config

import (
	"fmt"
	"reflect"
	"strings"
)

// Changes lists the keys whose values differ between old and new as file paths
// ("server.limits.budget", "backend[1].timeout", "prefix[0].credential"); a list whose length
// changed is named once ("backend"). Values are never part of the result: secrets change too.
// SIGHUP uses it to say, key by key, what it applied and what needs a restart.
func Changes(old, new *File) []string {
	var out []string
	diffValue("", reflect.ValueOf(*old), reflect.ValueOf(*new), &out)
	return out
}

var timestampType = reflect.TypeFor[Timestamp]()

func diffValue(path string, a, b reflect.Value, out *[]string) {
	switch {
	case a.Type() == timestampType:
		if !a.Interface().(Timestamp).Equal(b.Interface().(Timestamp).Time) {
			*out = append(*out, path)
		}
	case a.Kind() == reflect.Pointer:
		switch {
		case a.IsNil() && b.IsNil():
		case a.IsNil() || b.IsNil():
			*out = append(*out, path)
		default:
			diffValue(path, a.Elem(), b.Elem(), out)
		}
	case a.Kind() == reflect.Struct:
		t := a.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
			if name == "" || name == "-" {
				continue
			}
			p := name
			if path != "" {
				p = path + "." + name
			}
			diffValue(p, a.Field(i), b.Field(i), out)
		}
	case a.Kind() == reflect.Slice && a.Type().Elem().Kind() == reflect.Struct:
		if a.Len() != b.Len() {
			*out = append(*out, path)
			return
		}
		for i := range a.Len() {
			diffValue(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i), out)
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, path)
		}
	}
}
