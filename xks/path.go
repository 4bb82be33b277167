package xks

import (
	"errors"
	"strings"
)

// Operation is one of the four XKS Proxy API calls.
type Operation uint8

// The XKS operations.
const (
	OpHealth Operation = iota + 1
	OpMetadata
	OpEncrypt
	OpDecrypt
)

// String returns the spec's name of the API.
func (o Operation) String() string {
	switch o {
	case OpHealth:
		return "GetHealthStatus"
	case OpMetadata:
		return "GetKeyMetadata"
	case OpEncrypt:
		return "Encrypt"
	case OpDecrypt:
		return "Decrypt"
	}
	return "Unknown"
}

// pathSegment is the last URI segment of op ("health" has no key segment before it).
func (o Operation) pathSegment() string {
	switch o {
	case OpHealth:
		return "health"
	case OpMetadata:
		return "metadata"
	case OpEncrypt:
		return "encrypt"
	case OpDecrypt:
		return "decrypt"
	}
	return ""
}

// APIPathSuffix ends every XKS base path: [/<prefix>]/kms/xks/v1.
const APIPathSuffix = "/kms/xks/v1"

const (
	healthSuffix = APIPathSuffix + "/health"
	keysSuffix   = APIPathSuffix + "/keys"
	// maxBasePath bounds prefix+APIPathSuffix (spec: ≤ 128 characters).
	maxBasePath = 128
	maxKeyID    = 128
)

// ParsePath splits a URL path like "/aws/kms/xks/v1/keys/k1/encrypt" into prefix "/aws",
// op OpEncrypt and keyID "k1".
//
// ok is false when the path is not an XKS API path (wrong shape, unknown operation segment,
// empty key segment, trailing slash, or a prefix that ValidPrefix rejects): the caller answers
// 404 InvalidUriPathException, before authentication.
//
// A path of the right shape whose key segment is not a valid external key id (more than 128
// characters, or characters outside [A-Za-z0-9._-]) returns ok=true, keyID "" and a
// ValidationException (400): the route exists, its input is invalid. AWS never sends such ids
// (KMS validates XksKeyId itself), so this only answers other clients.
//
// Pass either r.URL.Path or r.URL.EscapedPath(): valid prefixes and key ids only use unreserved
// characters, so both forms agree on every valid path.
func ParsePath(path string) (prefix string, op Operation, keyID string, ok bool, err error) {
	if strings.HasSuffix(path, healthSuffix) {
		prefix = path[:len(path)-len(healthSuffix)]
		if ValidPrefix(prefix) != nil {
			return "", 0, "", false, nil
		}
		return prefix, OpHealth, "", true, nil
	}
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return "", 0, "", false, nil
	}
	switch path[i+1:] {
	case "metadata":
		op = OpMetadata
	case "encrypt":
		op = OpEncrypt
	case "decrypt":
		op = OpDecrypt
	default:
		return "", 0, "", false, nil
	}
	head := path[:i]
	j := strings.LastIndexByte(head, '/')
	if j < 0 {
		return "", 0, "", false, nil
	}
	keyID, head = head[j+1:], head[:j]
	if keyID == "" || !strings.HasSuffix(head, keysSuffix) {
		return "", 0, "", false, nil
	}
	prefix = head[:len(head)-len(keysSuffix)]
	if ValidPrefix(prefix) != nil {
		return "", 0, "", false, nil
	}
	if err := ValidKeyID(keyID); err != nil {
		return prefix, op, "", true, err
	}
	return prefix, op, keyID, true, nil
}

var (
	errPrefixStart = errors.New("must be empty or start with /")
	errPrefixLong  = errors.New("base path (prefix + /kms/xks/v1) longer than 128 characters")
	errPrefixChars = errors.New("may only contain a-z A-Z 0-9 / - _")
	errPrefixShort = errors.New("must have at least one character after the leading /")
)

// ValidPrefix checks an XKS URI path prefix: "" or "/" followed by at least one character, with
// the whole base path (prefix + APIPathSuffix) at most 128 characters from a-zA-Z0-9/-_
// (the pattern AWS KMS applies to XksProxyUriPath). Errors are ValidationException.
func ValidPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if prefix[0] != '/' {
		return Errorf(ValidationException, "URI path prefix %w", errPrefixStart)
	}
	if len(prefix) == 1 {
		return Errorf(ValidationException, "URI path prefix %w", errPrefixShort)
	}
	if len(prefix)+len(APIPathSuffix) > maxBasePath {
		return Errorf(ValidationException, "URI path prefix: %w", errPrefixLong)
	}
	for i := 1; i < len(prefix); i++ {
		if c := prefix[i]; !isAlnum(c) && c != '/' && c != '-' && c != '_' {
			return Errorf(ValidationException, "URI path prefix %w", errPrefixChars)
		}
	}
	return nil
}

// ValidKeyID checks an external key id: 1..128 characters of [A-Za-z0-9._-].
// Errors are ValidationException and never echo the id.
func ValidKeyID(id string) error {
	if id == "" {
		return Errorf(ValidationException, "external key id is empty")
	}
	if len(id) > maxKeyID {
		return Errorf(ValidationException, "external key id longer than %d characters", maxKeyID)
	}
	dots := 0
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '.' && c != '-' && c != '_' {
			return Errorf(ValidationException, "external key id may only contain A-Z a-z 0-9 . - _")
		} else if c == '.' {
			dots++
		}
	}
	if dots == len(id) {
		// "." and ".." would be path segments in the backend's URL.
		return Errorf(ValidationException, "external key id made only of dots")
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
