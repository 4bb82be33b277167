package sigv4

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// ErrInvalidCredential is wrapped by every Credential.Validate failure.
var ErrInvalidCredential = errors.New("sigv4: invalid credential")

const redacted = "[REDACTED]"

// Credential is one SigV4 credential set. Its String, GoString, Format, LogValue and MarshalJSON
// print only the access key id, so the secret cannot leak through fmt, slog or encoding/json.
type Credential struct {
	AccessKeyID string
	Secret      string
}

// Validate checks the access key id (16-128 characters of [A-Z0-9]; AWS-generated ids are
// 20-30 of A-Z2-7) and the secret (8-128 printable ASCII characters, no spaces). The error
// names the faulty field and never echoes the secret.
func (c Credential) Validate() error {
	if n := len(c.AccessKeyID); n < 16 || n > 128 {
		return fmt.Errorf("%w: access key id must be 16 to 128 characters, got %d", ErrInvalidCredential, n)
	}
	for i := 0; i < len(c.AccessKeyID); i++ {
		if b := c.AccessKeyID[i]; !(b >= 'A' && b <= 'Z' || b >= '0' && b <= '9') {
			return fmt.Errorf("%w: access key id must contain only A-Z and 0-9", ErrInvalidCredential)
		}
	}
	if n := len(c.Secret); n < 8 || n > 128 {
		return fmt.Errorf("%w: secret for access key id %s must be 8 to 128 characters, got %d", ErrInvalidCredential, c.AccessKeyID, n)
	}
	for i := 0; i < len(c.Secret); i++ {
		if b := c.Secret[i]; b < 0x21 || b > 0x7e {
			return fmt.Errorf("%w: secret for access key id %s must contain only printable ASCII characters without spaces", ErrInvalidCredential, c.AccessKeyID)
		}
	}
	return nil
}

// String prints the access key id only.
func (c Credential) String() string {
	return "{AccessKeyID:" + c.AccessKeyID + " Secret:" + redacted + "}"
}

// GoString prints the access key id only (for %#v).
func (c Credential) GoString() string {
	return "sigv4.Credential{AccessKeyID:" + strconv.Quote(c.AccessKeyID) + ", Secret:\"" + redacted + "\"}"
}

// Format covers every fmt verb (%d, %x, ... would otherwise print the fields).
func (c Credential) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = io.WriteString(f, c.GoString())
		return
	}
	_, _ = io.WriteString(f, c.String())
}

// LogValue prints the access key id only.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("access_key_id", c.AccessKeyID), slog.String("secret", redacted))
}

// MarshalJSON prints the access key id only.
func (c Credential) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct{ AccessKeyID, Secret string }{c.AccessKeyID, redacted})
}
