// Package sigv4 verifies inbound AWS Signature Version 4 header-signed requests (what AWS KMS
// sends to an XKS proxy) and signs outbound requests (the proxy re-signs each request it
// forwards to its backend).
//
// Verification rules and why:
//
//   - Only the Authorization header form with AWS4-HMAC-SHA256 is accepted; presigned (query)
//     signatures are not part of XKS.
//   - The SignedHeaders the client lists are honoured exactly; they must be lowercase, sorted,
//     unique and include host and x-amz-date. Header values are canonicalised as the AWS SDKs
//     do: leading/trailing whitespace trimmed, runs of spaces collapsed to one, multiple values
//     joined with ','. The host value comes from r.Host (HTTP/2 :authority lands there too).
//   - Canonical URI: the path exactly as received on the wire (r.URL.RawPath when Go kept it,
//     else r.URL.EscapedPath()), URI-encoded once more with AWS's rules (everything but
//     A-Za-z0-9-._~ and '/'). That is what every AWS SDK does for non-S3 services, so SDK and
//     KMS signatures verify; for XKS paths ([A-Za-z0-9/-_.]) it is the identity. There is no
//     dot-segment or slash normalisation: the path that was authenticated must be the path that
//     gets routed, and XKS paths are never unnormalised. The AWS suite cases that sign a
//     normalised form of an unnormalised path therefore fail by design.
//   - Canonical query string: AWS rules (pairs decoded, re-encoded, sorted). XKS has none.
//   - Payload hash: hex SHA-256 of the body. A signed x-amz-content-sha256 must equal it
//     (UNSIGNED-PAYLOAD is refused).
//   - The date comes from X-Amz-Date only (the Date header fallback is not supported: KMS,
//     curl and the SDKs all send X-Amz-Date, and it must be signed). Its day must equal the
//     scope day and it must be within MaxSkew of the injected clock (inclusive).
//   - Signing keys are cached per credential and day; signatures are compared with hmac.Equal.
package sigv4
