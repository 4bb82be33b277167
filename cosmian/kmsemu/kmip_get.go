package kmsemu

import (
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

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
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
	o, kerr := s.retrieveForOperation(uid, op, user, now)
	if kerr != nil {
		return ttlv.Node{}, kerr
	}
	if s.cfg.CosmianVersion.enforcesExtractable() && !o.exportable() {
		// 5.28.0 (GHSA-8mmx-f92q-2gq8): "deny non-extractable keys with
		// ResultReason::Not_Extractable", wrapped or not. The message is assumed to be "DENIED",
		// as for the Sensitive refusal next to it (FIDELITY.md).
		return ttlv.Node{}, kmipErr("Not_Extractable", "DENIED")
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
