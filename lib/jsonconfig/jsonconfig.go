// Package jsonconfig decodes the JSON configuration files of netman's programs strictly:
// an unknown field, a value of the wrong type or anything after the object is an error
// that names what is wrong, so a typo in a BOSH template fails the deploy instead of
// silently falling back to a default.
package jsonconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Load reads the file at path and parses it with Parse; errors name the file.
func Load[T any](path string, defaults T, validate func(*T) error) (*T, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config file: %w", err)
	}
	c, err := Parse(data, defaults, validate)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes data over defaults and validates the result.
func Parse[T any](data []byte, defaults T, validate func(*T) error) (*T, error) {
	c := defaults
	if err := Decode(data, &c); err != nil {
		return nil, err
	}
	if err := validate(&c); err != nil {
		return nil, err
	}
	return &c, nil
}

// Decode decodes the single JSON object in data over v, which holds the defaults.
func Decode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return fmt.Errorf("field %q: %s is not a valid %s", typeErr.Field, typeErr.Value, typeErr.Type)
		}
		if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
			return fmt.Errorf("unknown field %s", strings.TrimPrefix(msg, "json: unknown field "))
		}
		return fmt.Errorf("parsing JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("parsing JSON: unexpected data after the top-level object")
	}
	return nil
}
