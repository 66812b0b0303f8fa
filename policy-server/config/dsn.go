package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/lib/pq"
)

// refusedValue matches lib/pq's message for a parameter it refuses, which names the
// parameter (never the password: pq does not check it).
var refusedValue = regexp.MustCompile(`^pq: (wrong value for "[a-z_]+": .*|weak sslmode .*)$`)

// checkDriverParams parses dsn exactly as lib/pq will when the server connects
// (including the PG* environment variables it reads), so a value it refuses, such as
// sslmode=bogus, fails validation rather than the first connection. Only lib/pq's
// messages about a named parameter are passed on; others could quote the string and
// with it the password.
func checkDriverParams(dsn string) error {
	_, err := pq.NewConfig(dsn)
	if err == nil {
		return nil
	}
	if msg := err.Error(); refusedValue.MatchString(msg) {
		return fmt.Errorf("is refused by the database driver: %s", strings.TrimPrefix(msg, "pq: "))
	}
	return errors.New("is not a connection string the database driver can parse (check the URL or the key=value pairs and their quoting)")
}
