package kmsemu

import (
	"fmt"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

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
	o.extractable, o.neverExtractable = s.extractability(a.extractable, a.neverExtractable)
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if s.st.objects[uid] != nil {
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
		plain, err := kwpUnwrap(s.st.kek, material)
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
	ext, never := a.extractable, a.neverExtractable
	if ext == nil && never == nil {
		ext, never = kb.attrs.extractable, kb.attrs.neverExtractable
	}
	o.extractable, o.neverExtractable = s.extractability(ext, never)
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	if old := s.st.objects[uid]; old != nil {
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
		s.st.objects[uid] = o
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

// extractability is what a new or imported object stores as Extractable and NeverExtractable.
// Up to 5.27 they are kept as the request gave them (absent stays absent: nothing reads them).
// 5.28.0 "unconditionally latch[es] server-managed NeverExtractable across creation/import"
// (release notes, PR #1198): Extractable defaults to true (KMIP 2.1 §4.22) and NeverExtractable
// is derived from it as Attributes::apply_extractable does on a fresh object
// (crate/kmip/src/kmip_2_1/kmip_attributes.rs), whatever the client sent for it.
func (s *Server) extractability(ext, never *bool) (*bool, *bool) {
	if !s.cfg.CosmianVersion.enforcesExtractable() {
		return cloneBool(ext), cloneBool(never)
	}
	e := true
	if ext != nil {
		e = *ext
	}
	n := !e
	return &e, &n
}

func cloneBool(b *bool) *bool {
	if b == nil {
		return nil
	}
	v := *b
	return &v
}

// exportable reports whether 5.28's Get/Export would hand the key out (GHSA-8mmx-f92q-2gq8).
func (o *object) exportable() bool {
	return (o.extractable == nil || *o.extractable) && (o.neverExtractable == nil || !*o.neverExtractable)
}
