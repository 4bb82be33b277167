package sigv4

import "strings"

const (
	algorithm       = "AWS4-HMAC-SHA256"
	scopeTerminator = "aws4_request"

	// MaxAuthorizationLen bounds the Authorization header before any parsing.
	MaxAuthorizationLen = 4096
	// MaxSignedHeaders bounds the number of SignedHeaders entries.
	MaxSignedHeaders = 32
	maxAccessKeyLen  = 128
	maxScopePartLen  = 64
)

// Authorization is a parsed AWS4-HMAC-SHA256 Authorization header. The string fields are
// substrings of the header value (parsing does not allocate).
type Authorization struct {
	AccessKeyID string
	Date        string // credential scope date, yyyymmdd
	Region      string
	Service     string
	Scope       string // "yyyymmdd/region/service/aws4_request", as used in the string to sign
	// SignedHeaders is the list as sent, e.g. "host;x-amz-date": lowercase, sorted, unique,
	// at most MaxSignedHeaders entries, always including host and x-amz-date.
	SignedHeaders string
	Signature     [32]byte
}

// Headers returns the SignedHeaders entries.
func (a Authorization) Headers() []string {
	if a.SignedHeaders == "" {
		return nil
	}
	return strings.Split(a.SignedHeaders, ";")
}

var (
	errMalformed      = fixedErr{ReasonMalformedAuthorization, "Authorization must be: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..."}
	errDupComponent   = fixedErr{ReasonMalformedAuthorization, "Authorization component repeated"}
	errBadAccessKey   = fixedErr{ReasonMalformedAuthorization, "access key id must be 1 to 128 characters of A-Z a-z 0-9"}
	errBadScopePart   = fixedErr{ReasonMalformedAuthorization, "credential scope region and service must be 1 to 64 characters of a-z 0-9 . - _"}
	errBadSignedHdrs  = fixedErr{ReasonMalformedAuthorization, "SignedHeaders must be lowercase header names, sorted, unique, separated by ';'"}
	errTooManyHeaders = fixedErr{ReasonMalformedAuthorization, "too many SignedHeaders"}
	errBadSigFormat   = fixedErr{ReasonMalformedAuthorization, "Signature must be 64 lowercase hex digits"}
)

// ParseAuthorization parses an AWS4-HMAC-SHA256 Authorization header value: components in any
// order, each exactly once, optional whitespace after the commas. Every error is an *AuthError.
func ParseAuthorization(s string) (Authorization, error) {
	a, err := parseAuthorization(s)
	if err != nil {
		return Authorization{}, err
	}
	return a, nil
}

func parseAuthorization(s string) (Authorization, *AuthError) {
	var a Authorization
	if len(s) > MaxAuthorizationLen {
		return a, errAuthTooLong.err()
	}
	s = trimOWS(s)
	if s == "" {
		return a, errMissingAuth.err()
	}
	alg, rest, _ := strings.Cut(s, " ")
	if alg != algorithm {
		return a, errBadAlgorithm.err()
	}
	var cred, signed, sig string
	var seen uint8
	for rest != "" {
		var part string
		part, rest, _ = strings.Cut(rest, ",")
		name, value, ok := strings.Cut(trimOWS(part), "=")
		if !ok || value == "" {
			return a, errMalformed.err()
		}
		var bit uint8
		switch name {
		case "Credential":
			bit, cred = 1, value
		case "SignedHeaders":
			bit, signed = 2, value
		case "Signature":
			bit, sig = 4, value
		default:
			return a, errMalformed.err()
		}
		if seen&bit != 0 {
			return a, errDupComponent.err()
		}
		seen |= bit
	}
	if seen != 7 {
		return a, errMalformed.err()
	}
	if e := a.parseCredential(cred); e != nil {
		return a, e
	}
	if e := a.parseSignedHeaders(signed); e != nil {
		return a, e
	}
	if len(sig) != 64 {
		return a, errBadSigFormat.err()
	}
	for i := 0; i < 32; i++ {
		hi, ok1 := lowerHex(sig[2*i])
		lo, ok2 := lowerHex(sig[2*i+1])
		if !ok1 || !ok2 {
			return a, errBadSigFormat.err()
		}
		a.Signature[i] = hi<<4 | lo
	}
	return a, nil
}

func (a *Authorization) parseCredential(cred string) *AuthError {
	akid, scope, ok := strings.Cut(cred, "/")
	if !ok || strings.Count(scope, "/") != 3 {
		return errBadScopeParts.err()
	}
	if len(akid) == 0 || len(akid) > maxAccessKeyLen {
		return errBadAccessKey.err()
	}
	for i := 0; i < len(akid); i++ {
		if b := akid[i]; !(b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9') {
			return errBadAccessKey.err()
		}
	}
	date, r, _ := strings.Cut(scope, "/")
	region, r, _ := strings.Cut(r, "/")
	service, term, _ := strings.Cut(r, "/")
	if !ValidScopePart(region) || !ValidScopePart(service) {
		return errBadScopePart.err()
	}
	if term != scopeTerminator {
		return errBadScopeTerm.err()
	}
	if _, ok := parseDay(date); !ok {
		return errBadScopeDate.err()
	}
	a.AccessKeyID, a.Scope, a.Date, a.Region, a.Service = akid, scope, date, region, service
	return nil
}

func (a *Authorization) parseSignedHeaders(s string) *AuthError {
	var prev string
	var host, date bool
	n := 0
	for rest := s; ; {
		name, r, more := strings.Cut(rest, ";")
		n++
		if n > MaxSignedHeaders {
			return errTooManyHeaders.err()
		}
		if !validHeaderName(name) || (n > 1 && name <= prev) {
			return errBadSignedHdrs.err()
		}
		switch name {
		case "host":
			host = true
		case "x-amz-date":
			date = true
		}
		prev = name
		if !more {
			break
		}
		rest = r
	}
	if !host || !date {
		return errHostNotSigned.err()
	}
	a.SignedHeaders = s
	return nil
}

// validHeaderName reports whether s is a non-empty lowercase HTTP token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= '0' && b <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0:
		default:
			return false
		}
	}
	return true
}

// ValidScopePart: a credential scope region or service is 1 to 64 characters of a-z 0-9 . - _.
func ValidScopePart(s string) bool {
	if s == "" || len(s) > maxScopePartLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.') {
			return false
		}
	}
	return true
}

func lowerHex(b byte) (byte, bool) {
	switch {
	case b >= '0' && b <= '9':
		return b - '0', true
	case b >= 'a' && b <= 'f':
		return b - 'a' + 10, true
	}
	return 0, false
}

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// parseDay parses a yyyymmdd calendar date into the number yyyymmdd.
func parseDay(s string) (uint32, bool) {
	if len(s) != 8 {
		return 0, false
	}
	var v uint32
	for i := 0; i < 8; i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		v = v*10 + uint32(s[i]-'0')
	}
	y, m, d := v/10000, v/100%100, v%100
	if y < 1970 || m < 1 || m > 12 || d < 1 || d > daysIn(m, y) {
		return 0, false
	}
	return v, true
}

func daysIn(m, y uint32) uint32 {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
