package datastore_test

import (
	"errors"
	"reflect"
	"testing"

	"netman/lib/datastore"
)

// FuzzDatastoreDecode feeds arbitrary bytes to the decoder agents use: it must never
// panic, must call everything it rejects ErrCorrupt, and what it accepts must survive an
// encode/decode round trip unchanged.
func FuzzDatastoreDecode(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"h":{"handle":"h","ip":"10.255.1.2","metadata":{"app_id":"a","n":1e400}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		records, err := datastore.Decode(b)
		if err != nil {
			if !errors.Is(err, datastore.ErrCorrupt) {
				t.Fatalf("rejection is not ErrCorrupt: %v", err)
			}
			return
		}
		enc, err := datastore.Encode(records)
		if err != nil {
			t.Fatalf("cannot encode decoded records %v: %v", records, err)
		}
		again, err := datastore.Decode(enc)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", enc, err)
		}
		if !reflect.DeepEqual(records, again) {
			t.Fatalf("round trip changed %v into %v", records, again)
		}
	})
}
