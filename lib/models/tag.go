package models

// Tag is the short identifier the policy server assigns to a policy group, so agents can
// mark packets with it. Tag is upper-case, zero-padded hex of tag_length bytes ("0001").
type Tag struct {
	ID   string // the group id (an app guid for type "app")
	Type string // what kind of group: "app" unless a client said otherwise
	Tag  string
}
