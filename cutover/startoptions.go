package cutover

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// MarshalJSON writes Shadow as a Go duration string ("30s").
func (o StartOptions) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Shadow       string `json:"shadow"`
		NoShadow     bool   `json:"no_shadow,omitempty"`
		AutoSwitch   bool   `json:"auto_switch"`
		AutoFinalize bool   `json:"auto_finalize"`
		Source       string `json:"source,omitempty"`
		Target       string `json:"target,omitempty"`
	}{o.Shadow.String(), o.NoShadow, o.AutoSwitch, o.AutoFinalize, o.Source, o.Target})
}

// UnmarshalJSON reads Shadow as a duration string or a number of nanoseconds.
func (o *StartOptions) UnmarshalJSON(b []byte) error {
	var v struct {
		Shadow       json.RawMessage `json:"shadow"`
		NoShadow     bool            `json:"no_shadow"`
		AutoSwitch   bool            `json:"auto_switch"`
		AutoFinalize bool            `json:"auto_finalize"`
		Source       string          `json:"source"`
		Target       string          `json:"target"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return err
	}
	*o = StartOptions{NoShadow: v.NoShadow, AutoSwitch: v.AutoSwitch, AutoFinalize: v.AutoFinalize, Source: v.Source, Target: v.Target}
	for _, n := range []string{v.Source, v.Target} {
		if len(n) > 32 {
			return errors.New("source, target: a backend name is at most 32 characters")
		}
	}
	if len(v.Shadow) == 0 || string(v.Shadow) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(v.Shadow, &s); err == nil {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("shadow: %v", err)
		}
		o.Shadow = d
	} else {
		var n int64
		if err := json.Unmarshal(v.Shadow, &n); err != nil {
			return errors.New("shadow: want a duration such as \"30s\"")
		}
		o.Shadow = time.Duration(n)
	}
	if o.Shadow < 0 || o.Shadow > 7*24*time.Hour {
		return errors.New("shadow: out of range")
	}
	return nil
}
