package kmsemu

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

// cosmianOps are the operation tags Cosmian's dispatcher knows (core/operations/dispatch.rs).
// The emulator implements the ten the proxy needs; the others answer Not Supported.
var cosmianOps = []string{
	"Activate", "AddAttribute", "Certify", "Check", "Create", "CreateKeyPair", "Decrypt",
	"DeleteAttribute", "DeriveKey", "Destroy", "DiscoverVersions", "Encrypt", "Export", "Get",
	"GetAttributeList", "GetAttributes", "Hash", "Import", "Locate", "MAC", "MACVerify",
	"ModifyAttribute", "Query", "RNGRetrieve", "RNGSeed", "ReCertify", "ReKey", "ReKeyKeyPair",
	"Register", "Revoke", "SetAttribute", "Sign", "SignatureVerify", "Validate",
}

// maxLocateItems is Cosmian's server cap (core/operations/locate.rs MAX_LOCATE_ITEMS).
const maxLocateItems = 1000

// readBody reads the bounded body; on failure it answers like actix and returns false.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.errCount.Add(1)
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeText(w, http.StatusRequestEntityTooLarge, "text/plain; charset=utf-8", "A payload reached size limit.")
		} else {
			writeText(w, http.StatusBadRequest, "text/plain; charset=utf-8", "Error that occur during reading payload")
		}
		return nil, false
	}
	return body, true
}

// serveKMIP is routes/kmip.rs kmip_2_1_json.
func (s *Server) serveKMIP(w http.ResponseWriter, r *http.Request, user string) {
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if !utf8.Valid(body) { // actix's String extractor
		s.errCount.Add(1)
		writeText(w, http.StatusBadRequest, "text/plain; charset=utf-8", "Can not decode body")
		return
	}
	defer clear(body) // may hold key material (Import) or plaintext (Encrypt)
	req, err := ttlv.Unmarshal(body)
	if err != nil {
		s.countKMIP("invalid")
		s.writeKMIPError(w, invalidErr(err.Error()))
		return
	}
	defer req.Wipe()
	var resp ttlv.Node
	if req.Tag == "RequestMessage" {
		resp = s.handleMessage(req, user)
	} else {
		s.countKMIP(req.Tag)
		var kerr *kmsError
		resp, kerr = s.dispatch(req, user)
		if kerr != nil {
			s.log.Debug("kmsemu: kmip", "op", req.Tag, "user", user, "err", kerr.Error())
			s.writeKMIPError(w, kerr)
			return
		}
	}
	// Every ByteString of a response is a fresh copy (key material, plaintext): wipe them and the
	// encoded reply once written.
	defer resp.Wipe()
	out, err := ttlv.Marshal(resp)
	if err != nil {
		s.writeKMIPError(w, serverErr(err.Error()))
		return
	}
	defer clear(out)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

func (s *Server) writeKMIPError(w http.ResponseWriter, e *kmsError) {
	s.errCount.Add(1)
	status := e.status()
	body := e.Error()
	if status >= 500 {
		body = "Internal server error"
	}
	writeText(w, status, "text/html; charset=utf-8", body)
}

// handleMessage is routes/kmip.rs handle_ttlv for a RequestMessage plus operations/message.rs.
func (s *Server) handleMessage(req ttlv.Node, user string) ttlv.Node {
	hdr, ok := req.Child("RequestHeader")
	if !ok || hdr.Type != ttlv.Structure {
		return errorResponseMessage(2, 1, "missing field `RequestHeader`", s.now())
	}
	pv, ok := hdr.Child("ProtocolVersion")
	if !ok {
		return errorResponseMessage(2, 1, "missing field `ProtocolVersion`", s.now())
	}
	maj, ok1 := pv.Child("ProtocolVersionMajor")
	minr, ok2 := pv.Child("ProtocolVersionMinor")
	if !ok1 || !ok2 || maj.Type != ttlv.Integer || minr.Type != ttlv.Integer {
		return errorResponseMessage(2, 1, "missing field `ProtocolVersionMajor`", s.now())
	}
	items := req.All("BatchItem")
	if maj.Int != 2 {
		// KMIP 1.x batch items are converted by Cosmian; the emulator speaks 2.1 only.
		return errorResponseMessage(int32(maj.Int), int32(minr.Int), "kmsemu: only KMIP 2.x request messages are emulated", s.now())
	}
	out := []ttlv.Node{}
	for _, it := range items {
		opNode, ok := it.Child("Operation")
		if !ok || opNode.Type != ttlv.Enumeration {
			return errorResponseMessage(2, 1, "missing field `Operation`", s.now())
		}
		payload, ok := it.Child("RequestPayload")
		if !ok || payload.Type != ttlv.Structure {
			return errorResponseMessage(2, 1, "missing field `RequestPayload`", s.now())
		}
		if !slices.Contains(cosmianOps, opNode.Str) {
			return errorResponseMessage(2, 1, "unknown variant `"+opNode.Str+"`", s.now())
		}
		s.countKMIP(opNode.Str)
		payload.Tag = opNode.Str
		resp, kerr := s.dispatch(payload, user)
		bi := []ttlv.Node{ttlv.Enum("Operation", opNode.Str)}
		if id, ok := it.Child("UniqueBatchItemID"); ok && id.Type == ttlv.ByteString {
			bi = append(bi, ttlv.Bytes("UniqueBatchItemID", id.Bytes))
		}
		if kerr != nil {
			s.errCount.Add(1)
			reason, msg := kerr.batchResult()
			bi = append(bi, ttlv.Enum("ResultStatus", "OperationFailed"), ttlv.Enum("ResultReason", reason), ttlv.Text("ResultMessage", msg))
		} else {
			resp.Tag = "ResponsePayload"
			bi = append(bi, ttlv.Enum("ResultStatus", "Success"), resp)
		}
		out = append(out, ttlv.Struct("BatchItem", bi...))
	}
	children := []ttlv.Node{
		ttlv.Struct("ResponseHeader",
			ttlv.Struct("ProtocolVersion", ttlv.Int("ProtocolVersionMajor", int32(maj.Int)), ttlv.Int("ProtocolVersionMinor", int32(minr.Int))),
			ttlv.Date("TimeStamp", s.now()),
			ttlv.Int("BatchCount", int32(len(out))),
		),
	}
	return ttlv.Struct("ResponseMessage", append(children, out...)...)
}

// errorResponseMessage is routes/kmip.rs error_response_ttlv: a ResponseMessage with one
// Invalid_Message batch item and no Operation.
func errorResponseMessage(major, minor int32, msg string, now time.Time) ttlv.Node {
	return ttlv.Struct("ResponseMessage",
		ttlv.Struct("ResponseHeader",
			ttlv.Struct("ProtocolVersion", ttlv.Int("ProtocolVersionMajor", major), ttlv.Int("ProtocolVersionMinor", minor)),
			ttlv.Date("TimeStamp", now),
			ttlv.Int("BatchCount", 1),
		),
		ttlv.Struct("BatchItem",
			ttlv.Enum("ResultStatus", "OperationFailed"),
			ttlv.Enum("ResultReason", "Invalid_Message"),
			ttlv.Text("ResultMessage", msg),
		),
	)
}

// dispatch is core/operations/dispatch.rs for the emulated operations.
func (s *Server) dispatch(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	if req.Type != ttlv.Structure {
		return ttlv.Node{}, codecErr("invalid type: expected struct " + req.Tag)
	}
	switch req.Tag {
	case "Create":
		return s.opCreate(req, user)
	case "Import":
		return s.opImport(req, user)
	case "Get":
		return s.opExportGet(req, user, false)
	case "Export":
		return s.opExportGet(req, user, true)
	case "GetAttributes":
		return s.opGetAttributes(req, user)
	case "Locate":
		return s.opLocate(req, user)
	case "Encrypt":
		return s.opEncrypt(req, user)
	case "Decrypt":
		return s.opDecrypt(req, user)
	case "Revoke":
		return s.opRevoke(req, user)
	case "Destroy":
		return s.opDestroy(req, user)
	}
	if slices.Contains(cosmianOps, req.Tag) {
		return ttlv.Node{}, notSupportedErr("kmsemu: the " + req.Tag + " operation is not emulated")
	}
	return ttlv.Node{}, &kmsError{kind: kindRouteNotFound, msg: "Operation: " + req.Tag}
}

// ---- request field helpers (type errors are serde Codec_Error, as from_ttlv reports them) ----

func optChild(n ttlv.Node, tag string, typ ttlv.Type) (ttlv.Node, bool, *kmsError) {
	c, ok := n.Child(tag)
	if !ok {
		return ttlv.Node{}, false, nil
	}
	if c.Type != typ {
		return ttlv.Node{}, false, codecErr(fmt.Sprintf("invalid type for `%s`: expected %s, found %s", tag, typ, c.Type))
	}
	return c, true, nil
}

func reqChild(n ttlv.Node, tag string, typ ttlv.Type) (ttlv.Node, *kmsError) {
	c, ok, kerr := optChild(n, tag, typ)
	if kerr != nil {
		return c, kerr
	}
	if !ok {
		return c, codecErr("missing field `" + tag + "`")
	}
	return c, nil
}

// uidOf reads the UniqueIdentifier of an operation; absent means an ID placeholder.
func uidOf(n ttlv.Node) (string, *kmsError) {
	c, ok, kerr := optChild(n, "UniqueIdentifier", ttlv.TextString)
	if kerr != nil {
		return "", kerr
	}
	if !ok {
		return "", errPlaceholder
	}
	return c.Str, nil
}

// reqAttrs holds the request attributes the emulator understands.
type reqAttrs struct {
	alg, keyFormat, objectType, state, uid string
	length, mask                           *int32
	activation, compromise                 *time.Time
	sensitive                              *bool
	tags                                   []string // nil: no tag attribute
}

func (s *Server) parseAttrs(n ttlv.Node) (reqAttrs, *kmsError) {
	var a reqAttrs
	for _, c := range n.Children {
		switch c.Tag {
		case "CryptographicAlgorithm", "KeyFormatType", "ObjectType", "State":
			if c.Type != ttlv.Enumeration {
				return a, codecErr("invalid type for `" + c.Tag + "`")
			}
			switch c.Tag {
			case "CryptographicAlgorithm":
				a.alg = c.Str
			case "KeyFormatType":
				a.keyFormat = c.Str
			case "ObjectType":
				a.objectType = c.Str
			case "State":
				a.state = c.Str
			}
		case "CryptographicLength", "CryptographicUsageMask":
			if c.Type != ttlv.Integer {
				return a, codecErr("invalid type for `" + c.Tag + "`")
			}
			v := int32(c.Int)
			if c.Tag == "CryptographicLength" {
				a.length = &v
			} else {
				a.mask = &v
			}
		case "ActivationDate", "CompromiseOccurrenceDate":
			if c.Type != ttlv.DateTime {
				return a, codecErr("invalid type for `" + c.Tag + "`")
			}
			t := c.Time.UTC()
			if c.Tag == "ActivationDate" {
				a.activation = &t
			} else {
				a.compromise = &t
			}
		case "Sensitive":
			if c.Type != ttlv.Boolean {
				return a, codecErr("invalid type for `Sensitive`")
			}
			v := c.Bool
			a.sensitive = &v
		case "UniqueIdentifier":
			if c.Type != ttlv.TextString {
				return a, codecErr("invalid type for `UniqueIdentifier`")
			}
			a.uid = c.Str
		case "Attribute":
			vid, _ := c.Child("VendorIdentification")
			name, _ := c.Child("AttributeName")
			val, ok := c.Child("AttributeValue")
			if vid.Str == s.cfg.VendorID && name.Str == "tag" && ok {
				var tags []string
				if val.Type == ttlv.TextString {
					if err := json.Unmarshal([]byte(val.Str), &tags); err != nil {
						tags = nil
					}
				}
				if tags == nil {
					tags = []string{}
				}
				a.tags = tags
			}
		}
	}
	return a, nil
}

func (s *Server) newUUID() (string, error) {
	b, err := s.randBytes(16)
	if err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}

// ---- Create (core/operations/create.rs, kms/other_kms_methods.rs, kmip requests/create.rs) ----

func (s *Server) opCreate(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	ot, kerr := reqChild(req, "ObjectType", ttlv.Enumeration)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	an, kerr := reqChild(req, "Attributes", ttlv.Structure)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	if _, ok := req.Child("ProtectionStorageMasks"); ok {
		return ttlv.Node{}, &kmsError{kind: kindPlaceholder, msg: "This KMIP server does not yet support place holder id"}
	}
	if ot.Str != "SymmetricKey" {
		return ttlv.Node{}, notSupportedErr("This server does not yet support creation of: " + ot.Str)
	}
	a, kerr := s.parseAttrs(an)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	switch a.alg {
	case "":
		return ttlv.Node{}, invalidErr("the cryptographic algorithm must be specified for secret key creation")
	case "AES":
	default:
		return ttlv.Node{}, notSupportedErr("the creation of secret key for algorithm: " + a.alg + " is not supported")
	}
	if a.keyFormat != "" && a.keyFormat != "TransparentSymmetricKey" {
		return ttlv.Node{}, invalidErr("unable to generate a symmetric key for format: " + a.keyFormat)
	}
	bits := int32(256)
	if a.length != nil {
		bits = *a.length
	}
	if bits != 128 && bits != 192 && bits != 256 {
		return ttlv.Node{}, invalidErr(fmt.Sprintf("kmsemu: AES key length must be 128, 192 or 256 bits, got %d", bits))
	}
	mask := createDefaultMask
	if a.mask != nil {
		mask = *a.mask
	}
	uid := a.uid
	if uid == "" {
		var err error
		if uid, err = s.newUUID(); err != nil {
			return ttlv.Node{}, serverErr(err.Error())
		}
	}
	material, err := s.randBytes(int(bits / 8))
	if err != nil {
		return ttlv.Node{}, serverErr(err.Error())
	}
	now := s.now()
	set := map[string]struct{}{"_kk": {}}
	for _, t := range a.tags {
		set[t] = struct{}{}
	}
	o := &object{
		uid: uid, owner: user, state: statePreActive, length: bits, usageMask: mask,
		keyFormat: "TransparentSymmetricKey", initialDate: now, tags: sortedTags(set), material: material,
	}
	if a.activation != nil {
		act := *a.activation
		o.activation = &act
		if !act.After(now) {
			o.state = stateActive
		}
	}
	if a.sensitive != nil {
		o.sensitive = *a.sensitive
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.objects[uid] != nil {
		clear(material)
		return ttlv.Node{}, &kmsError{kind: kindDatabase, msg: "Ext. store error: one or more objects already exist"}
	}
	s.insertLocked(o)
	return ttlv.Struct("CreateResponse", ttlv.Enum("ObjectType", "SymmetricKey"), ttlv.Text("UniqueIdentifier", uid)), nil
}

// ---- Import (core/operations/import.rs) ----

func (s *Server) opImport(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	un, kerr := reqChild(req, "UniqueIdentifier", ttlv.TextString)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	ot, kerr := reqChild(req, "ObjectType", ttlv.Enumeration)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	replace := false
	if c, ok, kerr := optChild(req, "ReplaceExisting", ttlv.Boolean); kerr != nil {
		return ttlv.Node{}, kerr
	} else if ok {
		replace = c.Bool
	}
	wrapType := ""
	if c, ok, kerr := optChild(req, "KeyWrapType", ttlv.Enumeration); kerr != nil {
		return ttlv.Node{}, kerr
	} else if ok {
		wrapType = c.Str
	}
	an, kerr := reqChild(req, "Attributes", ttlv.Structure)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	if len(un.Str) > 0 && un.Str[0] == '[' {
		return ttlv.Node{}, serverErr("Importing objects with unique identifiers starting with `[` is not supported")
	}
	if ot.Str != "SymmetricKey" {
		return ttlv.Node{}, invalidErr("Import is not yet supported for objects of type : " + ot.Str + " (kmsemu emulates symmetric keys only)")
	}
	objNode, kerr := reqChild(req, "SymmetricKey", ttlv.Structure)
	if kerr != nil {
		return ttlv.Node{}, codecErr("missing field `Object`")
	}
	a, kerr := s.parseAttrs(an)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	kb, kerr := s.parseKeyBlock(objNode)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	defer clear(kb.material)
	uid := un.Str
	if uid == "" {
		var err error
		if uid, err = s.newUUID(); err != nil {
			return ttlv.Node{}, serverErr(err.Error())
		}
	}
	now := s.now()
	material, wrapped := kb.material, kb.wrapped
	if wrapped && wrapType == "NotWrapped" {
		plain, err := kwpUnwrap(s.kek, material)
		if err != nil {
			return ttlv.Node{}, kmipErr("Cryptographic_Failure", "CRYPTO: error: key unwrap failed")
		}
		material, wrapped = plain, false
		defer clear(plain)
	}
	if !wrapped {
		if n := len(material); n != 16 && n != 24 && n != 32 {
			return ttlv.Node{}, invalidErr(fmt.Sprintf("kmsemu: AES key material must be 16, 24 or 32 bytes, got %d", n))
		}
	}
	// Tags: the request's (minus system tags) if any, else the key value's.
	set := map[string]struct{}{}
	if len(a.tags) > 0 {
		for _, t := range a.tags {
			if len(t) > 0 && t[0] != '_' {
				set[t] = struct{}{}
			}
		}
	} else {
		for _, t := range kb.attrs.tags {
			set[t] = struct{}{}
		}
	}
	set["_kk"] = struct{}{}
	mask := maskUnrestricted // non-FIPS build: missing mask → Unrestricted
	switch {
	case a.mask != nil:
		mask = *a.mask
	case kb.attrs.mask != nil:
		mask = *kb.attrs.mask
	}
	bits := kb.length
	switch {
	case a.length != nil:
		bits = *a.length
	case kb.attrs.length != nil:
		bits = *kb.attrs.length
	case bits == 0 && !wrapped:
		bits = int32(len(material) * 8)
	}
	keyFormat := a.keyFormat
	if keyFormat == "" {
		keyFormat = kb.format
	}
	act := a.activation
	if act == nil {
		act = kb.attrs.activation
	}
	o := &object{
		uid: uid, owner: user, state: statePreActive, length: bits, usageMask: mask, keyFormat: keyFormat,
		initialDate: now, tags: sortedTags(set), material: append([]byte(nil), material...), wrapped: wrapped,
	}
	// State is Active only if the request's ActivationDate is not in the future.
	if a.activation != nil && !a.activation.After(now) {
		o.state = stateActive
	}
	if act != nil {
		t := *act
		o.activation = &t
	}
	if a.sensitive != nil {
		o.sensitive = *a.sensitive
	} else if kb.attrs.sensitive != nil {
		o.sensitive = *kb.attrs.sensitive
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.objects[uid]; old != nil {
		if !replace {
			clear(o.material)
			return ttlv.Node{}, &kmsError{kind: kindDatabase, msg: "Ext. store error: Database Error: one or more objects already exist"}
		}
		if old.owner != user {
			clear(o.material)
			return ttlv.Node{}, deniedErr("User '" + user + "' does not own object '" + uid + "' and cannot replace it")
		}
		clear(old.material)
		o.seq = old.seq
		s.objects[uid] = o
	} else {
		s.insertLocked(o)
	}
	return ttlv.Struct("ImportResponse", ttlv.Text("UniqueIdentifier", uid)), nil
}

type keyBlock struct {
	format   string
	material []byte // plaintext, or wrapped bytes when wrapped
	wrapped  bool
	length   int32
	attrs    reqAttrs
}

func (s *Server) parseKeyBlock(obj ttlv.Node) (keyBlock, *kmsError) {
	var kb keyBlock
	b, kerr := reqChild(obj, "KeyBlock", ttlv.Structure)
	if kerr != nil {
		return kb, kerr
	}
	f, kerr := reqChild(b, "KeyFormatType", ttlv.Enumeration)
	if kerr != nil {
		return kb, kerr
	}
	kb.format = f.Str
	if c, ok, kerr := optChild(b, "CryptographicAlgorithm", ttlv.Enumeration); kerr != nil {
		return kb, kerr
	} else if ok && c.Str != "AES" {
		return kb, invalidErr("kmsemu: only AES symmetric keys are emulated, got " + c.Str)
	}
	if c, ok, kerr := optChild(b, "CryptographicLength", ttlv.Integer); kerr != nil {
		return kb, kerr
	} else if ok {
		kb.length = int32(c.Int)
	}
	kv, ok := b.Child("KeyValue")
	if !ok {
		return kb, codecErr("missing field `KeyValue`")
	}
	if kv.Type == ttlv.ByteString { // wrapped key
		wd, ok := b.Child("KeyWrappingData")
		if !ok {
			return kb, codecErr("missing field `KeyWrappingData`")
		}
		kekID, _ := wd.Path("EncryptionKeyInformation", "UniqueIdentifier")
		if kekID.Str != kekUID {
			return kb, objectNotFound(kekID.Str)
		}
		kb.material, kb.wrapped = append([]byte(nil), kv.Bytes...), true
		return kb, nil
	}
	if kv.Type != ttlv.Structure {
		return kb, codecErr("invalid type for `KeyValue`")
	}
	km, ok := kv.Child("KeyMaterial")
	if !ok {
		return kb, codecErr("missing field `KeyMaterial`")
	}
	switch {
	case km.Type == ttlv.ByteString && kb.format == "Raw":
		kb.material = append([]byte(nil), km.Bytes...)
	case km.Type == ttlv.Structure && kb.format == "TransparentSymmetricKey":
		k, kerr := reqChild(km, "Key", ttlv.ByteString)
		if kerr != nil {
			return kb, kerr
		}
		kb.material = append([]byte(nil), k.Bytes...)
	default:
		return kb, invalidErr("kmsemu: unsupported key material for format " + kb.format)
	}
	if an, ok, kerr := optChild(kv, "Attributes", ttlv.Structure); kerr != nil {
		return kb, kerr
	} else if ok {
		if kb.attrs, kerr = s.parseAttrs(an); kerr != nil {
			return kb, kerr
		}
	}
	return kb, nil
}

// ---- attributes out ----

type attrOpts struct {
	keyFormat string // override the stored KeyFormatType
	withTags  bool
}

// attrNodes renders the object's attributes in Cosmian's Attributes field order (alphabetical by
// Rust field, vendor attributes last).
func (s *Server) attrNodes(o *object, now time.Time, opt attrOpts) []ttlv.Node {
	var out []ttlv.Node
	if o.activation != nil {
		out = append(out, ttlv.Date("ActivationDate", *o.activation))
	}
	out = append(out, ttlv.Bool("AlwaysSensitive", o.sensitive))
	if o.compromise != nil {
		out = append(out, ttlv.Date("CompromiseOccurrenceDate", *o.compromise))
	}
	out = append(out,
		ttlv.Enum("CryptographicAlgorithm", "AES"),
		ttlv.Int("CryptographicLength", o.length),
		ttlv.Int("CryptographicUsageMask", o.usageMask),
	)
	if o.deactivate != nil {
		out = append(out, ttlv.Date("DeactivationDate", *o.deactivate))
	}
	out = append(out, ttlv.Date("InitialDate", o.initialDate))
	kf := o.keyFormat
	if opt.keyFormat != "" {
		kf = opt.keyFormat
	}
	if kf != "" {
		out = append(out, ttlv.Enum("KeyFormatType", kf))
	}
	out = append(out,
		ttlv.Enum("ObjectType", "SymmetricKey"),
		ttlv.Bool("Sensitive", o.sensitive),
		ttlv.Enum("State", o.effectiveState(now)),
		ttlv.Text("UniqueIdentifier", o.uid),
	)
	if opt.withTags {
		out = append(out, s.tagAttr(o.tags))
	}
	return out
}

func (s *Server) tagAttr(tags []string) ttlv.Node {
	return ttlv.Struct("Attribute",
		ttlv.Text("VendorIdentification", s.cfg.VendorID),
		ttlv.Text("AttributeName", "tag"),
		ttlv.Text("AttributeValue", tagsJSON(tags)),
	)
}

// ---- Get / Export (core/operations/export_get.rs) ----

func (s *Server) opExportGet(req ttlv.Node, user string, export bool) (ttlv.Node, *kmsError) {
	uid, kerr := uidOf(req)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	format, wrapType := "", ""
	if c, ok, kerr := optChild(req, "KeyFormatType", ttlv.Enumeration); kerr != nil {
		return ttlv.Node{}, kerr
	} else if ok {
		format = c.Str
	}
	if c, ok, kerr := optChild(req, "KeyWrapType", ttlv.Enumeration); kerr != nil {
		return ttlv.Node{}, kerr
	} else if ok {
		wrapType = c.Str
	}
	_, hasKWS := req.Child("KeyWrappingSpecification")
	op := opGet
	if export {
		op = opExport
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	o, kerr := s.retrieveForOperation(uid, op, user, now)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	if o.sensitive && !hasKWS {
		return ttlv.Node{}, kmipErr("Sensitive", "DENIED")
	}
	if !export && o.state == stateDeactivated {
		return ttlv.Node{}, kmipErr("Wrong_Key_Lifecycle_State", "DENIED")
	}
	if o.destroyed() {
		return ttlv.Node{}, kmipErr("Object_Destroyed", "DENIED")
	}
	if hasKWS {
		return ttlv.Node{}, notSupportedErr("kmsemu: export wrapped by a KeyWrappingSpecification is not emulated")
	}
	var key ttlv.Node
	switch {
	case o.wrapped && wrapType != "NotWrapped" && format == "":
		key = s.wrappedKeyNode(o, now)
	case o.wrapped && wrapType != "NotWrapped" && format != "Raw":
		return ttlv.Node{}, serverErr("export: unable to export a wrapped symmetric key with a requested Key Format Type. It must be the default or Raw")
	default:
		switch format {
		case "", "Raw":
			format = "Raw"
		case "TransparentSymmetricKey":
		default:
			return ttlv.Node{}, serverErr("export: unsupported requested Key Format Type for a symmetric key: Some(" + format + ")")
		}
		plain, err := s.plainMaterialLocked(o)
		if err != nil {
			return ttlv.Node{}, serverErr(err.Error())
		}
		key = s.plainKeyNode(o, plain, format, now) // a copy, wiped by serveKMIP after writing
	}
	if export {
		return ttlv.Struct("ExportResponse",
			ttlv.Enum("ObjectType", "SymmetricKey"),
			ttlv.Text("UniqueIdentifier", o.uid),
			ttlv.Struct("Attributes", s.attrNodes(o, now, attrOpts{withTags: true})...),
			key,
		), nil
	}
	return ttlv.Struct("GetResponse",
		ttlv.Enum("ObjectType", "SymmetricKey"),
		ttlv.Text("UniqueIdentifier", o.uid),
		key,
	), nil
}

func (s *Server) plainKeyNode(o *object, plain []byte, format string, now time.Time) ttlv.Node {
	var km ttlv.Node
	if format == "TransparentSymmetricKey" {
		km = ttlv.Struct("KeyMaterial", ttlv.Bytes("Key", plain))
	} else {
		km = ttlv.Bytes("KeyMaterial", plain)
	}
	return ttlv.Struct("SymmetricKey", ttlv.Struct("KeyBlock",
		ttlv.Enum("KeyFormatType", format),
		ttlv.Struct("KeyValue", km, ttlv.Struct("Attributes", s.attrNodes(o, now, attrOpts{keyFormat: format, withTags: true})...)),
		ttlv.Enum("CryptographicAlgorithm", "AES"),
		ttlv.Int("CryptographicLength", o.length),
	))
}

func (s *Server) wrappedKeyNode(o *object, _ time.Time) ttlv.Node {
	kf := o.keyFormat
	if kf == "" {
		kf = "Raw"
	}
	return ttlv.Struct("SymmetricKey", ttlv.Struct("KeyBlock",
		ttlv.Enum("KeyFormatType", kf),
		ttlv.Bytes("KeyValue", append([]byte(nil), o.material...)),
		ttlv.Enum("CryptographicAlgorithm", "AES"),
		ttlv.Int("CryptographicLength", o.length),
		ttlv.Struct("KeyWrappingData",
			ttlv.Enum("WrappingMethod", "Encrypt"),
			ttlv.Struct("EncryptionKeyInformation",
				ttlv.Text("UniqueIdentifier", kekUID),
				ttlv.Struct("CryptographicParameters", ttlv.Enum("BlockCipherMode", "AESKeyWrapPadding")),
			),
			ttlv.Enum("EncodingOption", "NoEncoding"),
		),
	))
}

// ---- GetAttributes (core/operations/attributes/get.rs) ----

func (s *Server) opGetAttributes(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	uid := ""
	if c, ok, kerr := optChild(req, "UniqueIdentifier", ttlv.TextString); kerr != nil {
		return ttlv.Node{}, kerr
	} else if ok {
		uid = c.Str
	} else {
		uid = s.implicitUIDLocked(user)
		if uid == "" {
			return ttlv.Node{}, kmipErr("Item_Not_Found", "Get Attributes: no objects available for implicit selection")
		}
	}
	o, kerr := s.retrieveForOperation(uid, opGetAttributes, user, now)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	refs := req.All("AttributeReference")
	var attrs []ttlv.Node
	if len(refs) == 0 {
		attrs = s.attrNodes(o, now, attrOpts{keyFormat: normalizeKF(o.keyFormat)})
	} else {
		all := s.attrNodes(o, now, attrOpts{keyFormat: normalizeKF(o.keyFormat)})
		wantTags := false
		want := map[string]bool{}
		for _, r := range refs {
			switch r.Type {
			case ttlv.Enumeration:
				want[r.Str] = true
			case ttlv.Structure:
				vid, _ := r.Child("VendorIdentification")
				name, _ := r.Child("AttributeName")
				if vid.Str == s.cfg.VendorID && name.Str == "tag" {
					wantTags = true
				}
			default:
				return ttlv.Node{}, codecErr("invalid type for `AttributeReference`")
			}
		}
		for _, a := range all {
			if want[a.Tag] {
				attrs = append(attrs, a)
			}
		}
		if wantTags {
			attrs = append(attrs, s.tagAttr(o.tags))
		}
	}
	if attrs == nil {
		attrs = []ttlv.Node{}
	}
	return ttlv.Struct("GetAttributesResponse",
		ttlv.Text("UniqueIdentifier", o.uid),
		ttlv.Struct("Attributes", attrs...),
	), nil
}

func normalizeKF(kf string) string {
	if kf == "" || kf == "TransparentSymmetricKey" {
		return "Raw"
	}
	return kf
}

// implicitUIDLocked picks the caller's most recent object (else anyone's), as get.rs does
// without a UniqueIdentifier.
func (s *Server) implicitUIDLocked(user string) string {
	var bestUser, bestAny *object
	better := func(a, b *object) bool {
		return b == nil || a.initialDate.After(b.initialDate) || (a.initialDate.Equal(b.initialDate) && a.uid > b.uid)
	}
	for _, o := range s.objects {
		if o.owner == user && better(o, bestUser) {
			bestUser = o
		}
		if better(o, bestAny) {
			bestAny = o
		}
	}
	if bestUser != nil {
		return bestUser.uid
	}
	if bestAny != nil {
		return bestAny.uid
	}
	return ""
}

// ---- Locate (core/operations/locate.rs, server_database stores/sql/locate_query.rs) ----

func (s *Server) opLocate(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	an, kerr := reqChild(req, "Attributes", ttlv.Structure)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	a, kerr := s.parseAttrs(an)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	limit := maxLocateItems
	if c, ok, kerr := optChild(req, "MaximumItems", ttlv.Integer); kerr != nil {
		return ttlv.Node{}, kerr
	} else if ok {
		limit = min(max(int(c.Int), 0), maxLocateItems)
	}
	// OffsetItems is accepted and ignored: Cosmian 5.26 never reads it.
	if _, _, kerr := optChild(req, "OffsetItems", ttlv.Integer); kerr != nil {
		return ttlv.Node{}, kerr
	}
	s.mu.Lock()
	var found []*object
	for _, o := range s.objects {
		if o.owner != user && s.perms[o.uid][user] == 0 { // explicit grants only, not "*"
			continue
		}
		if a.tags != nil && !o.hasTags(a.tags) {
			continue
		}
		if a.objectType != "" && a.objectType != "SymmetricKey" {
			continue
		}
		if a.alg != "" && a.alg != "AES" {
			continue
		}
		if a.length != nil && *a.length != o.length {
			continue
		}
		if a.keyFormat != "" && a.keyFormat != o.keyFormat {
			continue
		}
		if a.uid != "" && a.uid != o.uid {
			continue
		}
		if a.state != "" {
			if o.state != a.state {
				continue
			}
		} else if o.destroyed() {
			continue
		}
		found = append(found, o)
	}
	slices.SortFunc(found, func(x, y *object) int { return int(x.seq - y.seq) })
	if len(found) > limit {
		found = found[:limit]
	}
	out := []ttlv.Node{ttlv.Int("LocatedItems", int32(len(found)))}
	for _, o := range found {
		out = append(out, ttlv.Text("UniqueIdentifier", o.uid))
	}
	s.mu.Unlock()
	return ttlv.Struct("LocateResponse", out...), nil
}

// ---- Encrypt / Decrypt (core/operations/encrypt.rs, decrypt.rs, key_ops/crypto_op.rs) ----

type cryptoReq struct {
	uid               string
	data, iv, aad, tg []byte
	hasData, hasIV    bool
}

func parseCryptoReq(req ttlv.Node, decrypt bool) (cryptoReq, *kmsError) {
	var c cryptoReq
	var kerr *kmsError
	if c.uid, kerr = uidOf(req); kerr != nil {
		return c, kerr
	}
	if cp, ok, kerr := optChild(req, "CryptographicParameters", ttlv.Structure); kerr != nil {
		return c, kerr
	} else if ok {
		if m, ok := cp.Child("BlockCipherMode"); ok && m.Str != "GCM" {
			return c, notSupportedErr("kmsemu: only AES-GCM is emulated, got block cipher mode " + m.Str)
		}
		if alg, ok := cp.Child("CryptographicAlgorithm"); ok && alg.Str != "AES" {
			return c, notSupportedErr("kmsemu: only AES is emulated, got " + alg.Str)
		}
	}
	for _, f := range []struct {
		tag string
		dst *[]byte
		has *bool
	}{
		{"Data", &c.data, &c.hasData},
		{"IVCounterNonce", &c.iv, &c.hasIV},
		{"AuthenticatedEncryptionAdditionalData", &c.aad, nil},
		{"AuthenticatedEncryptionTag", &c.tg, nil},
	} {
		n, ok, kerr := optChild(req, f.tag, ttlv.ByteString)
		if kerr != nil {
			return c, kerr
		}
		if ok {
			*f.dst = n.Bytes
			if f.has != nil {
				*f.has = true
			}
		}
	}
	_ = decrypt
	return c, nil
}

// keyForCrypto selects the key and copies its plaintext material (the caller wipes it).
func (s *Server) keyForCrypto(id string, decrypt bool, user string) (string, []byte, *kmsError) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	o, kerr := s.selectCryptoKey(id, decrypt, user, now)
	if kerr != nil {
		return "", nil, kerr
	}
	key, err := s.plainMaterialLocked(o)
	if err != nil {
		return "", nil, serverErr(err.Error())
	}
	return o.uid, key, nil
}

func gcm(key []byte, nonceSize int) (cipher.AEAD, *kmsError) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, notSupportedErr("kmsemu: AES key of " + itoa(len(key)) + " bytes")
	}
	a, err := cipher.NewGCMWithNonceSize(block, nonceSize)
	if err != nil {
		return nil, kmipErr("Cryptographic_Failure", "CRYPTO: error: Error: OpenSSL error. Details: ErrorStack([])")
	}
	return a, nil
}

// encryptGCM is the shared Encrypt path (also used by XKS).
func (s *Server) encryptGCM(c cryptoReq, user string) (uid string, ct, iv, tag []byte, kerr *kmsError) {
	uid, key, kerr := s.keyForCrypto(c.uid, false, user)
	if kerr != nil {
		return "", nil, nil, nil, kerr
	}
	defer clear(key)
	if !c.hasData {
		return "", nil, nil, nil, invalidErr("Encrypt: data to encrypt must be provided")
	}
	iv = c.iv
	if !c.hasIV {
		var err error
		if iv, err = s.randBytes(12); err != nil {
			return "", nil, nil, nil, serverErr(err.Error())
		}
	}
	if len(iv) == 0 {
		return "", nil, nil, nil, invalidErr("Encrypt: invalid IV/nonce length: expected 12 bytes for Aes256Gcm, got 0")
	}
	a, kerr := gcm(key, len(iv))
	if kerr != nil {
		return "", nil, nil, nil, kerr
	}
	out := a.Seal(nil, iv, c.data, c.aad)
	n := len(out) - a.Overhead()
	return uid, out[:n], iv, out[n:], nil
}

// decryptGCM is the shared Decrypt path (also used by XKS).
func (s *Server) decryptGCM(c cryptoReq, user string) (string, []byte, *kmsError) {
	uid, key, kerr := s.keyForCrypto(c.uid, true, user)
	if kerr != nil {
		return "", nil, kerr
	}
	defer clear(key)
	if !c.hasData {
		return "", nil, invalidErr("Decrypt: data to decrypt must be provided")
	}
	if !c.hasIV {
		return "", nil, kmipErr("Invalid_Message", "missing-iv")
	}
	iv := c.iv
	if len(iv) == 0 {
		iv = make([]byte, 12)
	}
	var a cipher.AEAD
	switch {
	case len(c.tg) == 16:
		var kerr *kmsError
		if a, kerr = gcm(key, len(iv)); kerr != nil {
			return "", nil, kerr
		}
	case len(c.tg) >= 12 && len(c.tg) < 16 && len(iv) == 12:
		// OpenSSL checks a truncated tag against the tag's prefix; so does Go's GCM.
		block, err := aes.NewCipher(key)
		if err != nil {
			return "", nil, notSupportedErr("kmsemu: AES key of " + itoa(len(key)) + " bytes")
		}
		if a, err = cipher.NewGCMWithTagSize(block, len(c.tg)); err != nil {
			return "", nil, errGCMTag
		}
	default:
		return "", nil, errGCMTag
	}
	in := make([]byte, 0, len(c.data)+len(c.tg))
	in = append(append(in, c.data...), c.tg...)
	pt, err := a.Open(nil, iv, in, c.aad)
	if err != nil {
		return "", nil, errGCMTag
	}
	return uid, pt, nil
}

func (s *Server) opEncrypt(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	c, kerr := parseCryptoReq(req, false)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	uid, ct, iv, tag, kerr := s.encryptGCM(c, user)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	return ttlv.Struct("EncryptResponse",
		ttlv.Text("UniqueIdentifier", uid),
		ttlv.Bytes("Data", ct),
		ttlv.Bytes("IVCounterNonce", iv),
		ttlv.Bytes("AuthenticatedEncryptionTag", tag),
	), nil
}

func (s *Server) opDecrypt(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	c, kerr := parseCryptoReq(req, true)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	uid, pt, kerr := s.decryptGCM(c, user)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	return ttlv.Struct("DecryptResponse", ttlv.Text("UniqueIdentifier", uid), ttlv.Bytes("Data", pt)), nil
}

// ---- Revoke (core/operations/revoke.rs) ----

func (s *Server) opRevoke(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	uid, kerr := uidOf(req)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	rr, kerr := reqChild(req, "RevocationReason", ttlv.Structure)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	code, kerr := reqChild(rr, "RevocationReasonCode", ttlv.Enumeration)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	var cdate *time.Time
	if c, ok, kerr := optChild(req, "CompromiseOccurrenceDate", ttlv.DateTime); kerr != nil {
		return ttlv.Node{}, kerr
	} else if ok {
		t := c.Time.UTC()
		cdate = &t
	}
	compromise := code.Str == "KeyCompromise" || code.Str == "CACompromise"
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	cands, kerr := s.candidates(uid)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	count := 0
	for _, o := range cands {
		switch o.state {
		case stateActive, statePreActive:
		case stateDestroyed, stateDestroyedCompromised:
			count++
			continue
		case stateDeactivated:
			if !compromise {
				count++
				continue
			}
		case stateCompromised:
			continue
		}
		if !s.userCanPerform(user, o, opRevoke) {
			continue
		}
		count++
		s.revokeLocked(o, code.Str, cdate, now)
	}
	if count == 0 {
		return ttlv.Node{}, kmipErr("Item_Not_Found", uid)
	}
	return ttlv.Struct("RevokeResponse", ttlv.Text("UniqueIdentifier", uid)), nil
}

// ---- Destroy (core/operations/destroy.rs) ----

func (s *Server) opDestroy(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	uid, kerr := uidOf(req)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	remove := false
	if c, ok, kerr := optChild(req, "Remove", ttlv.Boolean); kerr != nil {
		return ttlv.Node{}, kerr
	} else if ok {
		remove = c.Bool
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cands, kerr := s.candidates(uid)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	count := 0
	for _, o := range cands {
		if !s.userCanPerform(user, o, opDestroy) || o.destroyed() {
			continue
		}
		// The stored state decides, not the time-derived one.
		if o.state == stateActive && o.activation != nil {
			return ttlv.Node{}, kmipErr("Wrong_Key_Lifecycle_State", "DENIED")
		}
		count++
		if remove {
			if o.state == stateActive {
				return ttlv.Node{}, invalidErr("Object with unique identifier: " + o.uid + " is active. It must be revoked first")
			}
			clear(o.material)
			delete(s.objects, o.uid)
			delete(s.perms, o.uid)
			continue
		}
		if o.state == stateCompromised {
			o.state = stateDestroyedCompromised
		} else {
			o.state = stateDestroyed
		}
		clear(o.material)
		o.material, o.wrapped = nil, false
	}
	if count == 0 {
		return ttlv.Node{}, kmipErr("Item_Not_Found", uid)
	}
	return ttlv.Struct("DestroyResponse", ttlv.Text("UniqueIdentifier", uid)), nil
}
