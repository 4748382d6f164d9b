package tasks

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/perkgo/perk/perk"
)

// BabiLongTasks lists the BabiLong task names, in order:
//
//	qa1  single supporting fact    "Where is Mary?"
//	qa2  two supporting facts      "Where is the apple?"
//	qa3  three supporting facts    "Where was the apple before the kitchen?"
//	qa4  two-argument relations    "What is north of the kitchen?"
//	qa5  three-argument relations  "Who gave the apple to Fred?"
var BabiLongTasks = []string{"qa1", "qa2", "qa3", "qa4", "qa5"}

// babiSpec is the fact count a task defaults to and accepts.
type babiSpec struct{ defFacts, minFacts, maxFacts int }

// maxStoryFacts bounds the facts of one story.
const maxStoryFacts = 5000

var babiSpecs = map[string]babiSpec{
	"qa1": {10, 1, maxStoryFacts},
	"qa2": {20, 2, maxStoryFacts},
	"qa3": {30, 3, maxStoryFacts},
	"qa4": {4, 1, len(qa4Places) - 1},
	"qa5": {20, 4, maxStoryFacts},
}

// Vocabulary of the stories (bAbI's, with a few more agents and objects).
var (
	babiAgents    = []string{"Mary", "John", "Daniel", "Sandra", "Fred", "Bill", "Jeff", "Julie"}
	babiLocations = []string{"bathroom", "bedroom", "garden", "hallway", "kitchen", "office"}
	babiObjects   = []string{"apple", "football", "milk", "book", "cup", "lamp"}
	moveVerbs     = []string{"went to", "journeyed to", "travelled to", "moved to", "went back to"}
	takeVerbs     = []string{"picked up", "got", "grabbed", "took"}
	dropVerbs     = []string{"dropped", "discarded", "put down", "left"}
	giveVerbs     = []string{"gave", "handed", "passed"}
	qa4Places     = []string{"bathroom", "bedroom", "garden", "hallway", "kitchen", "office", "cellar", "attic",
		"library", "pantry", "study", "porch", "garage", "nursery", "workshop", "balcony"}
	qa4Dirs = []string{"north", "south", "east", "west"}
)

// BabiLongOptions configures a BabiLong generator.
type BabiLongOptions struct {
	Options
	// Task is one of BabiLongTasks.
	Task string
	// Facts is the number of story facts per record (0: the task's
	// default: qa1 10, qa2 20, qa3 30, qa4 4, qa5 20). qa4 takes at most
	// 15.
	Facts int
}

// BabiLong generates BabiLong-style records: a bAbI-like story hidden in
// distractor prose.
//
// Facts about agents carry per-agent event numbers, "Mary Event 3: Mary
// went to the kitchen.", numbered from 0 in the order of that agent's
// actions, so the order that matters survives shuffled segments. The story
// is built so that every question can be answered from one agent's events
// in event order (an object in qa2 and qa3 is only ever handled by one
// agent; a qa5 question that would need the order of two agents' events is
// never asked). qa4's facts are timeless relations on a grid of places,
// "The kitchen is north of the bedroom.", and carry no event number.
//
// Support lists the facts the answer rests on, in event order: qa1 the
// agent's last move; qa2 the take and the move that placed the agent (or
// the move and the drop); qa3 the take, the move into the place asked
// about and the move before it (or the move before the take); qa4 and qa5
// the one relation.
type BabiLong struct {
	b    *base
	task string
	nf   int
}

// NewBabiLong validates o and returns a generator. Unknown tasks, fact
// counts out of range, bad depths, and a context or segment limit too short
// for the story's facts are errors.
func NewBabiLong(o BabiLongOptions) (*BabiLong, error) {
	spec, ok := babiSpecs[o.Task]
	if !ok {
		return nil, fmt.Errorf("unknown BabiLong task %q (want one of %s)", o.Task, strings.Join(BabiLongTasks, ", "))
	}
	nf := o.Facts
	if nf == 0 {
		nf = spec.defFacts
	}
	if nf < spec.minFacts || nf > spec.maxFacts {
		return nil, fmt.Errorf("%s takes %d to %d facts per story, not %d", o.Task, spec.minFacts, spec.maxFacts, nf)
	}
	c := o.Counter
	if c == nil {
		c = ApproxCounter{}
	}
	unit := babiMaxFactCost(c, o.Task, nf)
	b, err := newBase(o.Options, fmt.Sprintf("%d %s facts", nf, o.Task), unit, nf*unit, true)
	if err != nil {
		return nil, err
	}
	return &BabiLong{b: b, task: o.Task, nf: nf}, nil
}

// babiMaxFactCost is the largest cost of any fact a task can write with
// event numbers below nf.
func babiMaxFactCost(c Counter, task string, nf int) int {
	best := 0
	see := func(s string) { best = max(best, sentenceCost(c, s)) }
	if task == "qa4" {
		for _, a := range qa4Places {
			for _, d := range qa4Dirs {
				for _, p := range qa4Places {
					see(relFact(a, d, p))
				}
			}
		}
		return best
	}
	n := nf - 1
	for _, a := range babiAgents {
		for _, v := range moveVerbs {
			for _, l := range babiLocations {
				see(moveFact(a, n, v, l))
			}
		}
		if task == "qa1" {
			continue
		}
		for _, o := range babiObjects {
			for _, v := range takeVerbs {
				see(takeFact(a, n, v, o))
			}
			for _, v := range dropVerbs {
				see(dropFact(a, n, v, o, false))
				see(dropFact(a, n, v, o, true))
			}
			if task == "qa5" {
				for _, v := range giveVerbs {
					for _, to := range babiAgents {
						see(giveFact(a, n, v, o, to))
					}
				}
			}
		}
	}
	return best
}

func moveFact(a string, n int, verb, loc string) string {
	return fmt.Sprintf("%s Event %d: %s %s the %s.", a, n, a, verb, loc)
}

func takeFact(a string, n int, verb, obj string) string {
	return fmt.Sprintf("%s Event %d: %s %s the %s there.", a, n, a, verb, obj)
}

func dropFact(a string, n int, verb, obj string, there bool) string {
	s := fmt.Sprintf("%s Event %d: %s %s the %s", a, n, a, verb, obj)
	if there {
		s += " there"
	}
	return s + "."
}

func giveFact(a string, n int, verb, obj, to string) string {
	return fmt.Sprintf("%s Event %d: %s %s the %s to %s.", a, n, a, verb, obj, to)
}

func relFact(a, dir, b string) string { return fmt.Sprintf("The %s is %s of the %s.", a, dir, b) }

// Item returns record i, "babilong-{task}-{i}", with its metadata (Item).
func (g *BabiLong) Item(i int) (Item, error) {
	rng := g.b.rng(i)
	var facts []string
	var q babiQuestion
	ok := false
	for try := 0; try < maxStoryTries && !ok; try++ {
		if g.task == "qa4" {
			facts, q, ok = qa4Story(rng, g.nf)
		} else {
			facts, q, ok = simulate(rng, g.task, g.nf)
		}
	}
	id := fmt.Sprintf("babilong-%s-%d", g.task, i)
	if !ok {
		return Item{}, fmt.Errorf("record %s: no %s story with %d facts has a question after %d tries (use more facts)", id, g.task, g.nf, maxStoryTries)
	}
	depth := g.b.depth(i)
	ctx, tokens, err := g.b.layout(rng, facts, q.support, depth)
	if err != nil {
		return Item{}, fmt.Errorf("record %s: %w", id, err)
	}
	sup := make([]string, len(q.support))
	for k, s := range q.support {
		sup[k] = facts[s]
	}
	r := perk.Record{ID: id, Context: ctx, Question: q.question, Answer: q.answer, Support: sup}
	return Item{Record: r, Meta: recordMeta(tokens, depth, q.support)}, r.Validate()
}

// maxStoryTries bounds the stories drawn for one record before giving up.
const maxStoryTries = 10000

// babiQuestion is a question, its answer and the indices of its support
// facts.
type babiQuestion struct {
	question, answer string
	support          []int
}

// Fact kinds of the simulated stories.
const (
	actMove = iota
	actTake
	actDrop
	actGive
)

// event is one simulated fact.
type event struct {
	kind          int
	agent, obj    string
	loc, to, text string
}

// world is the state of a qa1/qa2/qa3/qa5 story being simulated.
type world struct {
	rng    *rand.Rand
	task   string
	agents []string
	objs   []string
	loc    map[string]string // agent → current location
	next   map[string]int    // agent → next event number
	holder map[string]string // object → agent holding it
	objLoc map[string]string // object → where it lies when not held
	takes  map[string]int    // object → times taken
	events []event
}

// simulate draws a story of nf facts and picks a question; ok is false
// when the story has nothing to ask.
func simulate(rng *rand.Rand, task string, nf int) ([]string, babiQuestion, bool) {
	nAgents := min(4, max(2, (nf+2)/3))
	if task == "qa1" {
		nAgents = min(4, nf)
	}
	w := &world{rng: rng, task: task, loc: map[string]string{}, next: map[string]int{},
		holder: map[string]string{}, objLoc: map[string]string{}, takes: map[string]int{}}
	for _, k := range rng.Perm(len(babiAgents))[:nAgents] {
		w.agents = append(w.agents, babiAgents[k])
	}
	for _, k := range rng.Perm(len(babiObjects))[:4] {
		w.objs = append(w.objs, babiObjects[k])
	}
	for len(w.events) < nf {
		w.step()
	}
	var cands [][]babiQuestion
	switch task {
	case "qa1":
		cands = [][]babiQuestion{w.qa1()}
	case "qa2":
		cands = [][]babiQuestion{w.qa2()}
	case "qa3":
		cands = [][]babiQuestion{w.qa3()}
	case "qa5":
		cands = w.qa5()
	}
	q, ok := pick(rng, cands)
	facts := make([]string, len(w.events))
	for i, e := range w.events {
		facts[i] = e.text
	}
	return facts, q, ok
}

// pick chooses a question type uniformly among those with candidates, then
// a candidate of that type uniformly.
func pick(rng *rand.Rand, cands [][]babiQuestion) (babiQuestion, bool) {
	var types [][]babiQuestion
	for _, c := range cands {
		if len(c) > 0 {
			types = append(types, c)
		}
	}
	if len(types) == 0 {
		return babiQuestion{}, false
	}
	t := types[rng.IntN(len(types))]
	return t[rng.IntN(len(t))], true
}

func (w *world) choose(xs []string) string { return xs[w.rng.IntN(len(xs))] }

// add records an event of agent a with its event number and text.
func (w *world) add(e event) {
	n := w.next[e.agent]
	w.next[e.agent]++
	switch e.kind {
	case actMove:
		e.text = moveFact(e.agent, n, w.choose(moveVerbs), e.loc)
	case actTake:
		e.text = takeFact(e.agent, n, w.choose(takeVerbs), e.obj)
	case actDrop:
		e.text = dropFact(e.agent, n, w.choose(dropVerbs), e.obj, w.rng.IntN(2) == 0)
	case actGive:
		e.text = giveFact(e.agent, n, w.choose(giveVerbs), e.obj, e.to)
	}
	w.events = append(w.events, e)
}

// step adds one event by a random agent.
func (w *world) step() {
	a := w.choose(w.agents)
	if w.loc[a] == "" || w.task == "qa1" {
		w.move(a)
		return
	}
	var held, takeable []string
	for _, o := range w.objs {
		switch {
		case w.holder[o] == a:
			held = append(held, o)
		case w.holder[o] != "":
		case w.task == "qa5" && (w.takes[o] == 0 || w.objLoc[o] == w.loc[a]):
			takeable = append(takeable, o)
		case w.task != "qa5" && w.takes[o] == 0:
			// qa2/qa3: each object is taken at most once, so one agent's
			// events decide where it is.
			takeable = append(takeable, o)
		}
	}
	var mates []string
	for _, b := range w.agents {
		if b != a && w.loc[b] == w.loc[a] {
			mates = append(mates, b)
		}
	}
	odds := actionOdds[w.task]
	r := w.rng.Float64()
	switch {
	case len(held) > 0 && len(mates) > 0 && r < odds.give:
		o := w.choose(held)
		to := w.choose(mates)
		w.holder[o] = to
		w.add(event{kind: actGive, agent: a, obj: o, to: to})
	case len(takeable) > 0 && r < odds.take:
		o := w.choose(takeable)
		w.holder[o] = a
		w.takes[o]++
		w.add(event{kind: actTake, agent: a, obj: o})
	case len(held) > 0 && r >= odds.drop:
		o := w.choose(held)
		w.holder[o] = ""
		w.objLoc[o] = w.loc[a]
		w.add(event{kind: actDrop, agent: a, obj: o})
	default:
		w.move(a)
	}
}

// actionOdds are thresholds on one uniform draw r that choose an agent's
// next action when it is possible: give when r < give, take when r < take,
// drop when r ≥ drop, and otherwise move.
var actionOdds = map[string]struct{ give, take, drop float64 }{
	"qa2": {0, 0.25, 0.85},
	"qa3": {0, 0.25, 0.85},
	"qa5": {0.5, 0.7, 0.9},
}

// move sends agent a somewhere else (in qa5, half the time to another
// agent, so that there is someone to give things to).
func (w *world) move(a string) {
	var to string
	if w.task == "qa5" && w.rng.IntN(2) == 0 {
		var others []string
		for _, b := range w.agents {
			if l := w.loc[b]; b != a && l != "" && l != w.loc[a] {
				others = append(others, l)
			}
		}
		if len(others) > 0 {
			to = w.choose(others)
		}
	}
	for to == "" || to == w.loc[a] {
		to = w.choose(babiLocations)
	}
	w.loc[a] = to
	w.add(event{kind: actMove, agent: a, loc: to})
}

// lastMove returns the index of agent a's last move before event i.
func (w *world) lastMove(a string, i int) int {
	for k := i - 1; k >= 0; k-- {
		if e := w.events[k]; e.agent == a && e.kind == actMove {
			return k
		}
	}
	return -1
}

// qa1: "Where is A?" for every agent that moved.
func (w *world) qa1() []babiQuestion {
	var out []babiQuestion
	for _, a := range w.agents {
		if m := w.lastMove(a, len(w.events)); m >= 0 {
			out = append(out, babiQuestion{"Where is " + a + "?", w.events[m].loc, []int{m}})
		}
	}
	return out
}

// objectEvents returns the indices of the take and the drop (-1 if none)
// of an object taken once.
func (w *world) objectEvents(o string) (take, drop int) {
	take, drop = -1, -1
	for k, e := range w.events {
		if e.obj == o && e.kind == actTake {
			take = k
		}
		if e.obj == o && e.kind == actDrop {
			drop = k
		}
	}
	return take, drop
}

// qa2: "Where is the O?" for every object that was taken.
func (w *world) qa2() []babiQuestion {
	var out []babiQuestion
	for _, o := range w.objs {
		take, drop := w.objectEvents(o)
		if take < 0 {
			continue
		}
		a := w.events[take].agent
		var sup []int
		var where string
		if drop >= 0 {
			m := w.lastMove(a, drop)
			sup, where = []int{m, drop}, w.events[m].loc
		} else {
			m := w.lastMove(a, len(w.events))
			sup, where = []int{take, m}, w.events[m].loc
			slices.Sort(sup)
		}
		out = append(out, babiQuestion{"Where is the " + o + "?", where, sup})
	}
	return out
}

// qa3: "Where was the O before the L?" for every place L the object
// reached exactly once after it was taken.
func (w *world) qa3() []babiQuestion {
	var out []babiQuestion
	for _, o := range w.objs {
		take, drop := w.objectEvents(o)
		if take < 0 {
			continue
		}
		a := w.events[take].agent
		end := len(w.events)
		if drop >= 0 {
			end = drop
		}
		// The object's places while held, and the move into each.
		moves := []int{w.lastMove(a, take)}
		for k := take + 1; k < end; k++ {
			if e := w.events[k]; e.agent == a && e.kind == actMove {
				moves = append(moves, k)
			}
		}
		count := map[string]int{}
		for _, m := range moves {
			count[w.events[m].loc]++
		}
		for i := 1; i < len(moves); i++ {
			l := w.events[moves[i]].loc
			if count[l] != 1 {
				continue
			}
			sup := []int{take, moves[i-1], moves[i]}
			slices.Sort(sup)
			out = append(out, babiQuestion{"Where was the " + o + " before the " + l + "?", w.events[moves[i-1]].loc, sup})
		}
	}
	return out
}

// qa5: five question types about gives, each asked only when one agent's
// events decide the answer.
func (w *world) qa5() [][]babiQuestion {
	var gives []int
	for k, e := range w.events {
		if e.kind == actGive {
			gives = append(gives, k)
		}
	}
	// latest returns the last give matching f (all matches must share a
	// giver, so event order is the giver's order).
	latest := func(f func(e event) bool) int {
		last := -1
		for _, k := range gives {
			if f(w.events[k]) {
				last = k
			}
		}
		return last
	}
	matches := func(f func(e event) bool) (n int, givers, objs, tos map[string]bool) {
		givers, objs, tos = map[string]bool{}, map[string]bool{}, map[string]bool{}
		for _, k := range gives {
			if e := w.events[k]; f(e) {
				n++
				givers[e.agent], objs[e.obj], tos[e.to] = true, true, true
			}
		}
		return n, givers, objs, tos
	}
	out := make([][]babiQuestion, 5)
	for _, a := range w.agents {
		for _, b := range w.agents {
			// What did A give to B? (A's last give to B)
			if k := latest(func(e event) bool { return e.agent == a && e.to == b }); k >= 0 {
				out[0] = append(out[0], babiQuestion{"What did " + a + " give to " + b + "?", w.events[k].obj, []int{k}})
			}
		}
		for _, o := range w.objs {
			// Who did A give the O to? (A's last give of O)
			if k := latest(func(e event) bool { return e.agent == a && e.obj == o }); k >= 0 {
				out[1] = append(out[1], babiQuestion{"Who did " + a + " give the " + o + " to?", w.events[k].to, []int{k}})
			}
		}
	}
	for _, o := range w.objs {
		for _, b := range w.agents {
			// Who gave the O to B? (only one agent ever did)
			f := func(e event) bool { return e.obj == o && e.to == b }
			if n, givers, _, _ := matches(f); n > 0 && len(givers) == 1 {
				k := latest(f)
				out[2] = append(out[2], babiQuestion{"Who gave the " + o + " to " + b + "?", w.events[k].agent, []int{k}})
			}
		}
		// Who received the O? (it was given once)
		f := func(e event) bool { return e.obj == o }
		if n, _, _, _ := matches(f); n == 1 {
			k := latest(f)
			out[3] = append(out[3], babiQuestion{"Who received the " + o + "?", w.events[k].to, []int{k}})
		}
	}
	for _, b := range w.agents {
		// What did B receive? (B was given one thing once)
		f := func(e event) bool { return e.to == b }
		if n, _, _, _ := matches(f); n == 1 {
			k := latest(f)
			out[4] = append(out[4], babiQuestion{"What did " + b + " receive?", w.events[k].obj, []int{k}})
		}
	}
	return out
}

// qa4Story lays nf relations between places on a grid (a random tree of
// neighbouring cells, so that "What is north of the X?" has one answer) and
// asks about one of them, possibly through the opposite direction.
func qa4Story(rng *rand.Rand, nf int) ([]string, babiQuestion, bool) {
	type cell struct{ x, y int }
	step := map[string]cell{"north": {0, 1}, "south": {0, -1}, "east": {1, 0}, "west": {-1, 0}}
	opposite := map[string]string{"north": "south", "south": "north", "east": "west", "west": "east"}
	names := make([]string, len(qa4Places))
	for i, k := range rng.Perm(len(qa4Places)) {
		names[i] = qa4Places[k]
	}
	at := map[cell]string{{0, 0}: names[0]}
	pos := []cell{{0, 0}}
	type rel struct{ a, dir, b string }
	var rels []rel
	for len(rels) < nf {
		placed := false
		for try := 0; try < 100 && !placed; try++ {
			from := pos[rng.IntN(len(pos))]
			d := qa4Dirs[rng.IntN(len(qa4Dirs))]
			to := cell{from.x + step[d].x, from.y + step[d].y}
			if at[to] != "" {
				continue
			}
			name := names[len(pos)]
			at[to] = name
			pos = append(pos, to)
			// The new place lies d of the old one; say it either way round.
			if rng.IntN(2) == 0 {
				rels = append(rels, rel{name, d, at[from]})
			} else {
				rels = append(rels, rel{at[from], opposite[d], name})
			}
			placed = true
		}
		if !placed {
			return nil, babiQuestion{}, false
		}
	}
	facts := make([]string, len(rels))
	for i, r := range rels {
		facts[i] = relFact(r.a, r.dir, r.b)
	}
	k := rng.IntN(len(rels))
	r := rels[k]
	var q babiQuestion
	switch rng.IntN(4) {
	case 0: // The A is D of the B: what is D of the B? A.
		q = babiQuestion{"What is " + r.dir + " of the " + r.b + "?", r.a, nil}
	case 1: // what is the A D of? B.
		q = babiQuestion{"What is the " + r.a + " " + r.dir + " of?", r.b, nil}
	case 2: // what is opposite(D) of the A? B.
		q = babiQuestion{"What is " + opposite[r.dir] + " of the " + r.a + "?", r.b, nil}
	default: // what is the B opposite(D) of? A.
		q = babiQuestion{"What is the " + r.b + " " + opposite[r.dir] + " of?", r.a, nil}
	}
	q.support = []int{k}
	return facts, q, true
}
