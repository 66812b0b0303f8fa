package config_test

import (
	"strings"
	"testing"

	"netman/policy-server/config"
)

// connection_string is read as lib/pq reads it when the server connects, so a value
// the driver refuses fails validation, not the first connection after a deploy.
func TestConnectionStringAsTheDriverReadsIt(t *testing.T) {
	cases := []struct {
		dsn  string
		want string // "" means valid
	}{
		{"postgres://netman:s3cret@db:5432/netman?sslmode=disable", ""},
		{"postgres://netman:s3cret@db/netman?sslmode=verify-full&sslrootcert=/ca.crt", ""},
		{"host=db user=netman password=s3cret sslmode=require", ""},
		{"postgres://netman:s3cret@db/netman?sslmode=bogus", `wrong value for "sslmode": "bogus" is not supported`},
		{"host=db password=s3cret sslmode=bogus", `wrong value for "sslmode"`},
		{"host=db password=s3cret port=99999999", `wrong value for "port"`},
		{"host=db password=s3cret target_session_attrs=any-old", `wrong value for "target_session_attrs"`},
		{"host=db password=s3cret sslnegotiation=direct sslmode=disable", `weak sslmode "disable"`},
		{"postgres://netman:s3cret@db/netman?connect_timeout=soon", `wrong value for "connect_timeout"`},
		{"host=db password='s3cret sslmode=disable", "can parse"},
	}
	for _, tc := range cases {
		m := valid()
		m["database"].(map[string]any)["connection_string"] = tc.dsn
		_, err := config.Parse(encode(t, m))
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.dsn, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "database.connection_string") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want database.connection_string and %q", tc.dsn, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: error repeats the password: %v", tc.dsn, err)
		}
	}
}
