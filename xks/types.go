package xks

import "crypto/sha256"

// RequestMetadata is the requestMetadata object of every XKS request (spec §"requestMetadata").
type RequestMetadata struct {
	AWSPrincipalArn string `json:"awsPrincipalArn,omitempty"`
	KMSKeyArn       string `json:"kmsKeyArn,omitempty"`
	KMSOperation    string `json:"kmsOperation"`
	KMSRequestID    string `json:"kmsRequestId"`
	AWSSourceVpc    string `json:"awsSourceVpc,omitempty"`
	AWSSourceVpce   string `json:"awsSourceVpce,omitempty"`
	KMSViaService   string `json:"kmsViaService,omitempty"`
}

// HealthRequest is the GetHealthStatus request body.
type HealthRequest struct {
	RequestMetadata RequestMetadata `json:"requestMetadata"`
}

// MetadataRequest is the GetKeyMetadata request body.
type MetadataRequest struct {
	RequestMetadata RequestMetadata `json:"requestMetadata"`
}

// EncryptRequest is the Encrypt request body. []byte fields are standard padded base64 on the wire.
type EncryptRequest struct {
	RequestMetadata                       RequestMetadata `json:"requestMetadata"`
	Plaintext                             []byte          `json:"plaintext"`
	EncryptionAlgorithm                   string          `json:"encryptionAlgorithm"`
	AdditionalAuthenticatedData           []byte          `json:"additionalAuthenticatedData,omitempty"`
	CiphertextDataIntegrityValueAlgorithm string          `json:"ciphertextDataIntegrityValueAlgorithm,omitempty"`
}

// DecryptRequest is the Decrypt request body.
type DecryptRequest struct {
	RequestMetadata             RequestMetadata `json:"requestMetadata"`
	Ciphertext                  []byte          `json:"ciphertext"`
	EncryptionAlgorithm         string          `json:"encryptionAlgorithm"`
	InitializationVector        []byte          `json:"initializationVector"`
	AuthenticationTag           []byte          `json:"authenticationTag"`
	CiphertextMetadata          []byte          `json:"ciphertextMetadata,omitempty"`
	AdditionalAuthenticatedData []byte          `json:"additionalAuthenticatedData,omitempty"`
}

// MetadataResponse is the GetKeyMetadata reply.
type MetadataResponse struct {
	KeySpec   string   `json:"keySpec"`
	KeyUsage  []string `json:"keyUsage"`
	KeyStatus string   `json:"keyStatus"`
}

// EncryptResponse is the Encrypt reply.
type EncryptResponse struct {
	Ciphertext                   []byte `json:"ciphertext"`
	InitializationVector         []byte `json:"initializationVector"`
	AuthenticationTag            []byte `json:"authenticationTag"`
	CiphertextMetadata           []byte `json:"ciphertextMetadata,omitempty"`
	CiphertextDataIntegrityValue []byte `json:"ciphertextDataIntegrityValue,omitempty"`
}

// DecryptResponse is the Decrypt reply.
type DecryptResponse struct {
	Plaintext []byte `json:"plaintext"`
}

// HealthResponse is the GetHealthStatus reply.
type HealthResponse struct {
	XksProxyFleetSize int         `json:"xksProxyFleetSize"`
	XksProxyVendor    string      `json:"xksProxyVendor"`
	XksProxyModel     string      `json:"xksProxyModel"`
	EkmVendor         string      `json:"ekmVendor"`
	EkmFleetDetails   []EKMDetail `json:"ekmFleetDetails"`
}

// EKMDetail is one entry of ekmFleetDetails.
type EKMDetail struct {
	ID           string `json:"id"`
	Model        string `json:"model"`
	HealthStatus string `json:"healthStatus"`
}

// healthStatus values of EKMDetail.
const (
	HealthActive      = "ACTIVE"
	HealthDegraded    = "DEGRADED"
	HealthUnavailable = "UNAVAILABLE"
)

// Wire constants.
const (
	AlgorithmAESGCM   = "AES_GCM"
	CDIVAlgSHA256     = "SHA_256"
	KeyStatusEnabled  = "ENABLED"
	KeyStatusDisabled = "DISABLED"
)

// CDIV computes the ciphertext data integrity value of spec Appendix C:
// SHA-256(aad || ciphertextMetadata || iv || ciphertext || tag) over the decoded bytes, an absent
// field counting as empty. It returns the 32-byte digest; the wire form is its base64.
func CDIV(aad, ciphertextMetadata, iv, ciphertext, tag []byte) []byte {
	h := sha256.New()
	h.Write(aad)
	h.Write(ciphertextMetadata)
	h.Write(iv)
	h.Write(ciphertext)
	h.Write(tag)
	return h.Sum(make([]byte, 0, sha256.Size))
}
