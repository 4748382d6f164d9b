// Package tasks generates the long-context tasks PERK is trained and
// evaluated on, as perk.Record values whose context is already cut into
// segments, and converts the reference implementation's JSON files.
//
// Generators:
//
//   - BabiLong (NewBabiLong): bAbI-like stories, qa1 to qa5, hidden in
//     distractor prose. Facts about agents carry per-agent event numbers
//     ("Mary Event 3: Mary went to the kitchen.") so their order survives
//     shuffled segments.
//   - Needle (NewNeedle): RULER-style needles in a haystack, single,
//     multikey, multivalue and multiquery.
//   - Students (NewStudents): Drops-in-the-Ocean-style student records, one
//     record per segment, with recall, relation and aggregate questions.
//
// A generator returns Items: a record and its perk.RecordMeta, the
// record's context length in tokens as the generator counted it and, when
// it placed the support at a chosen depth, that depth.
//
// Every generator is deterministic: record i draws from the PCG stream
// (Seed, i) of math/rand/v2, so the same options give the same records,
// byte for byte, for any record count and worker count (Run). A record's
// context holds at most Options.Tokens tokens in segments of at most
// Options.SegmentTokens tokens, cut at sentence boundaries and never
// through a fact. Tokens are counted by a Counter: ApproxCounter (4 bytes a
// token) by default, or TokenizerCounter for exact counts. Options.Depths
// places the facts a record's answer rests on (its support) at chosen
// depths of the context.
//
// The distractor text is prose written for this package (Distractors),
// shipped in the binary: no download is needed.
//
// Readers (ReadBabiLong, ReadStudents) convert the reference
// implementation's BabiLong ({context, question, answer, support}) and
// student-records ({database, questions}) JSON to records, with no
// metadata (the reference files carry none). MarshalItem and WriteItems
// write records with their "meta" object, MarshalRecord and WriteRecords
// without; perk.ReadRecords reads either, and perk.ReadEvalRecords reads the
// metadata too.
package tasks
