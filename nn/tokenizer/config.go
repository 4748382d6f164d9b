package tokenizer

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Config holds the fields of a checkpoint's tokenizer_config.json that name
// its control tokens. Absent tokens are empty strings.
type Config struct {
	// BOSToken, EOSToken, PadToken and UnkToken are token contents, such as
	// "<|im_end|>"; look their ids up with Tokenizer.TokenID.
	BOSToken, EOSToken, PadToken, UnkToken string
	// AddBOSToken reports whether the model expects BOSToken before every
	// input.
	AddBOSToken bool
	// ChatTemplate is the Jinja chat template, if any.
	ChatTemplate string
}

// LoadConfig reads a tokenizer_config.json (optionally gzip-compressed).
func LoadConfig(path string) (Config, error) {
	data, err := readMaybeGzip(path)
	if err != nil {
		return Config{}, fmt.Errorf("tokenizer config %s: %w", path, err)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("tokenizer config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes the contents of a tokenizer_config.json. Token fields
// may be strings, {"content": ...} objects or null.
func ParseConfig(data []byte) (Config, error) {
	var raw struct {
		BOS          json.RawMessage `json:"bos_token"`
		EOS          json.RawMessage `json:"eos_token"`
		Pad          json.RawMessage `json:"pad_token"`
		Unk          json.RawMessage `json:"unk_token"`
		AddBOS       *bool           `json:"add_bos_token"`
		ChatTemplate json.RawMessage `json:"chat_template"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, fmt.Errorf("%v: %w", err, ErrFormat)
	}
	var c Config
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *string
	}{{"bos_token", raw.BOS, &c.BOSToken}, {"eos_token", raw.EOS, &c.EOSToken}, {"pad_token", raw.Pad, &c.PadToken}, {"unk_token", raw.Unk, &c.UnkToken}} {
		s, err := tokenField(f.raw)
		if err != nil {
			return Config{}, fmt.Errorf("%s: %v: %w", f.name, err, ErrFormat)
		}
		*f.dst = s
	}
	if raw.AddBOS != nil {
		c.AddBOSToken = *raw.AddBOS
	}
	// chat_template is a string, or a list of named templates; keep the
	// string form (or the one named "default").
	if t := bytes.TrimSpace(raw.ChatTemplate); len(t) > 0 {
		switch t[0] {
		case '"':
			_ = json.Unmarshal(t, &c.ChatTemplate)
		case '[':
			var list []struct {
				Name     string `json:"name"`
				Template string `json:"template"`
			}
			if json.Unmarshal(t, &list) == nil {
				for _, e := range list {
					if e.Name == "default" {
						c.ChatTemplate = e.Template
					}
				}
			}
		}
	}
	return c, nil
}

// tokenField decodes a token given as a string, an object with "content", or
// null.
func tokenField(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var obj struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", err
	}
	return obj.Content, nil
}
