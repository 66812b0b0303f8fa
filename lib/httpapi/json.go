package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxBodyBytes caps a request body: 10 MiB holds tens of thousands of policies.
const MaxBodyBytes = 10 << 20

// WriteJSON writes body, already JSON, with status and its length.
func WriteJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	w.Write(body)
}

// WriteValue writes v encoded as JSON with status; a value that cannot be encoded is a
// 500 JSON error.
func WriteValue(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		Logger(r.Context()).Error("encoding response", "error", err)
		WriteError(w, r, http.StatusInternalServerError, "encoding the response failed")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// WriteError writes {"error": msg} with status.
func WriteError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	b := append([]byte(`{"error":`), AppendString(nil, msg)...)
	b = append(b, '}')
	if status >= 500 {
		Logger(r.Context()).Warn("request failed", "status", status, "error", msg)
	}
	WriteJSON(w, status, b)
}

// AppendString appends s as a JSON string. Group ids are GUIDs in practice, which need
// no escaping; anything else goes through encoding/json so escaping stays exact.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= utf8.RuneSelf {
			enc, err := json.Marshal(s)
			if err != nil { // cannot happen for a string
				return append(b, `""`...)
			}
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// DecodeBody reads one JSON value of at most MaxBodyBytes into v, refusing unknown
// fields (a misspelt "protocl" must not become a policy without a protocol). On failure
// it returns the status to answer with and a message for the client.
func DecodeBody(r *http.Request, v any) (int, error) {
	body := http.MaxBytesReader(nil, r.Body, MaxBodyBytes)
	data, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			// 400 like every other refused body, so clients need one error path.
			return http.StatusBadRequest, fmt.Errorf("request body is larger than %d bytes (10 MiB)", MaxBodyBytes)
		}
		return http.StatusBadRequest, fmt.Errorf("reading request body: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return http.StatusBadRequest, errors.New("request body is empty; it must be JSON")
	}
	if err := checkUnicode(data); err != nil {
		return http.StatusBadRequest, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return http.StatusBadRequest, fmt.Errorf("request body is not valid JSON for this route: %s", jsonProblem(err))
	}
	if dec.More() {
		return http.StatusBadRequest, errors.New("request body is not valid JSON for this route: data after the JSON value")
	}
	return 0, nil
}

// jsonProblem rewords encoding/json errors without its "json: " prefix and Go type names.
func jsonProblem(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		field := typeErr.Field
		if field == "" {
			field = "the body"
		}
		return fmt.Sprintf("%s must not be a JSON %s", field, typeErr.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}
