package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// turns lets another program's rounds take turns with ours: before each
// concurrent round we write "ready ROUND" on -turn-out and wait for a line
// "go" on -turn-in; between its snapshots and its teardowns we write
// "snapped ROUND" and wait for "go" again (in-guest.sh counts the guest's
// CPU of each part); after it we write "done ROUND". in-guest.sh passes the
// turns between this program and the thinsnap flow's, so a host whose load
// drifts during the run weighs on the rounds of both alike.
type turns struct {
	in  *bufio.Reader
	out *os.File
}

// openTurns opens OUT for writing, then IN for reading (the order the
// other end opens them in, or both would wait for ever); nil without them.
func openTurns(in, out string) (*turns, error) {
	if in == "" && out == "" {
		return nil, nil
	}
	if in == "" || out == "" {
		return nil, fmt.Errorf("-turn-in and -turn-out go together")
	}
	w, err := os.OpenFile(out, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	r, err := os.Open(in)
	if err != nil {
		w.Close()
		return nil, err
	}
	return &turns{in: bufio.NewReader(r), out: w}, nil
}

// begin says round is ready to run and waits for its turn.
func (t *turns) begin(round int) error { return t.sayAndWait("ready", round) }

// mid says round's snapshots are done and waits for a "go" to tear them down.
func (t *turns) mid(round int) error { return t.sayAndWait("snapped", round) }

// sayAndWait writes "WORD ROUND" and reads a line "go".
func (t *turns) sayAndWait(word string, round int) error {
	if t == nil {
		return nil
	}
	if _, err := fmt.Fprintf(t.out, "%s %d\n", word, round); err != nil {
		return fmt.Errorf("%s %d: %w", word, round, err)
	}
	line, err := t.in.ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s %d: %w", word, round, err)
	}
	if strings.TrimSpace(line) != "go" {
		return fmt.Errorf("%s %d: got %q, expected \"go\"", word, round, line)
	}
	return nil
}

// end says round is over.
func (t *turns) end(round int) error {
	if t == nil {
		return nil
	}
	if _, err := fmt.Fprintf(t.out, "done %d\n", round); err != nil {
		return fmt.Errorf("end of round %d: %w", round, err)
	}
	return nil
}
