package kmsemu

import (
	"time"

	"github.com/xksproxy/xksproxy/cosmian/ttlv"
)

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
	if o.extractable != nil {
		out = append(out, ttlv.Bool("Extractable", *o.extractable))
	}
	out = append(out, ttlv.Date("InitialDate", o.initialDate))
	kf := o.keyFormat
	if opt.keyFormat != "" {
		kf = opt.keyFormat
	}
	if kf != "" {
		out = append(out, ttlv.Enum("KeyFormatType", kf))
	}
	if o.neverExtractable != nil {
		out = append(out, ttlv.Bool("NeverExtractable", *o.neverExtractable))
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

// ---- GetAttributes (core/operations/attributes/get.rs) ----

func (s *Server) opGetAttributes(req ttlv.Node, user string) (ttlv.Node, *kmsError) {
	now := s.now()
	s.st.mu.Lock()
	defer s.st.mu.Unlock()
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
	for _, o := range s.st.objects {
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
