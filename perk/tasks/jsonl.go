package tasks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"

	"github.com/perkgo/perk/perk"
)

// recordJSON is the JSONL form of a record, the one perk.ParseRecords
// reads (and perk.ParseEvalRecords, with "meta").
type recordJSON struct {
	ID       string           `json:"id"`
	Context  []string         `json:"context"`
	Question string           `json:"question"`
	Answer   string           `json:"answer"`
	Support  []string         `json:"support,omitempty"`
	Meta     *perk.RecordMeta `json:"meta,omitempty"`
}

// MarshalItem encodes a record and its metadata as one JSONL line, newline
// included:
//
//	{"id":"...","context":["...",...],"question":"...","answer":"...","support":["...",...],"meta":{"tokens":n,"depth":d}}
//
// "support" is left out when empty, "meta" when it has neither field, and
// each field of "meta" when nil; perk.ReadEvalRecords reads the line back
// as a perk.EvalRecord with the same Meta. HTML characters ('<', '>', '&')
// are written as they are. A record that fails perk.Record.Validate, a
// negative meta token count or a depth that is not finite is an error.
func MarshalItem(it Item) ([]byte, error) {
	r := it.Record
	if err := r.Validate(); err != nil {
		return nil, err
	}
	j := recordJSON{ID: r.ID, Context: r.Context, Question: r.Question, Answer: r.Answer, Support: r.Support}
	if m := it.Meta; m.Tokens != nil || m.Depth != nil {
		if m.Tokens != nil && *m.Tokens < 0 {
			return nil, fmt.Errorf("record %q: meta tokens %d is negative", r.ID, *m.Tokens)
		}
		if m.Depth != nil && (math.IsNaN(*m.Depth) || math.IsInf(*m.Depth, 0)) {
			return nil, fmt.Errorf("record %q: meta depth %v is not finite", r.ID, *m.Depth)
		}
		j.Meta = &m
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(j); err != nil {
		return nil, fmt.Errorf("record %q: %w", r.ID, err)
	}
	return buf.Bytes(), nil
}

// MarshalRecord encodes a record with no metadata as one JSONL line
// (MarshalItem with an empty Meta, so no "meta" key):
//
//	{"id":"...","context":["...",...],"question":"...","answer":"...","support":["...",...]}
func MarshalRecord(r perk.Record) ([]byte, error) { return MarshalItem(Item{Record: r}) }

// WriteRecords writes records with no metadata as JSONL (MarshalRecord),
// the form of converted files.
func WriteRecords(w io.Writer, recs []perk.Record) error {
	items := make([]Item, len(recs))
	for i, r := range recs {
		items[i] = Item{Record: r}
	}
	return WriteItems(w, items)
}

// WriteItems writes records with their metadata as JSONL (MarshalItem),
// the form of generated files.
func WriteItems(w io.Writer, items []Item) error {
	for _, it := range items {
		line, err := MarshalItem(it)
		if err != nil {
			return err
		}
		if _, err := w.Write(line); err != nil {
			return fmt.Errorf("write record %q: %w", it.Record.ID, err)
		}
	}
	return nil
}
