package datastore

import (
	"errors"
	"reflect"
	"testing"
)

// FuzzDatastoreDecode feeds arbitrary bytes to the decoder agents use: it must never
// panic, must call everything it rejects ErrCorrupt, what it accepts must survive an
// encode/decode round trip unchanged, and the writers' decoder must accept exactly the
// same files.
func FuzzDatastoreDecode(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"h":{"handle":"h","ip":"10.255.1.2","metadata":{"app_id":"a","n":1e400}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		records, err := Decode(b)
		if _, rawErr := decodeRaw(b); (rawErr == nil) != (err == nil) {
			t.Fatalf("Decode error %v, writers' decoder error %v", err, rawErr)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("rejection is not ErrCorrupt: %v", err)
			}
			return
		}
		enc, err := Encode(records)
		if err != nil {
			t.Fatalf("cannot encode decoded records %v: %v", records, err)
		}
		again, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", enc, err)
		}
		if !reflect.DeepEqual(records, again) {
			t.Fatalf("round trip changed %v into %v", records, again)
		}
	})
}
