package cli

import (
	"context"
	"flag"
	"fmt"
	"strings"
)

// completeCommand is the hidden command the completion scripts call on every TAB:
// `netman __complete WORD... CURRENT` prints the candidates for CURRENT, one a line.
// Answering from the command table keeps the scripts right as commands and flags
// change; an empty answer lets the shell complete file names (--key FILE, --ca FILE).
const completeCommand = "__complete"

var completionCommand = &command{
	name:     "completion",
	summary:  "print a shell completion script (bash or zsh)",
	synopsis: "completion bash|zsh",
	details: `Prints a script that completes netman's commands, subcommands and flags.

  bash:  source <(netman completion bash)            (e.g. in ~/.bashrc)
  zsh:   source <(netman completion zsh)             (after compinit, e.g. in ~/.zshrc)
         or save it as _netman in a directory of $fpath
`,
	setup: func(fs *flag.FlagSet, _ *common, env Env) runFunc {
		return func(_ context.Context, pos []string) error {
			if err := wantArgs("completion", pos, 1, "a shell: bash or zsh"); err != nil {
				return err
			}
			script, ok := completionScripts[pos[0]]
			if !ok {
				msg := fmt.Sprintf("completion: unknown shell %q; say bash or zsh", pos[0])
				if s := suggest(pos[0], []string{"bash", "zsh"}); s != "" {
					msg = fmt.Sprintf("completion: unknown shell %q; did you mean %q?", pos[0], s)
				}
				return usageError{msg: msg}
			}
			_, err := fmt.Fprint(env.Stdout, strings.ReplaceAll(script, "PROGRAM", env.Program))
			return err
		}
	},
}

var completionScripts = map[string]string{
	"bash": `# bash completion for PROGRAM; load it with: source <(PROGRAM completion bash)
_PROGRAM_complete() {
  local IFS=$'\n'
  COMPREPLY=($("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
}
complete -o default -F _PROGRAM_complete PROGRAM
`,
	"zsh": `#compdef PROGRAM
# zsh completion for PROGRAM; load it with: source <(PROGRAM completion zsh)
_PROGRAM_complete() {
  local -a candidates
  candidates=(${(f)"$("${words[1]}" __complete "${(@)words[2,CURRENT]}" 2>/dev/null)"})
  if (( ${#candidates} )); then
    compadd -- "${candidates[@]}"
  else
    _files
  fi
}
compdef _PROGRAM_complete PROGRAM
`,
}

// complete prints the candidates for the last of words.
func complete(words []string, env Env) error {
	if len(words) == 0 {
		words = []string{""}
	}
	cur, before := words[len(words)-1], words[:len(words)-1]
	// The positional words so far; a flag's value is not one.
	var pos []string
	for i := 0; i < len(before); i++ {
		w := before[i]
		if strings.HasPrefix(w, "-") {
			if !strings.Contains(w, "=") && !isBoolFlag(w) && !isHelp(w) {
				i++
			}
			continue
		}
		pos = append(pos, w)
	}
	var cands []string
	var cmd *command
	switch {
	case len(pos) == 0:
		cands = topLevel()
	case pos[0] == "help":
		cands = topLevel()
		if len(pos) > 1 && groups[pos[1]] != "" {
			cands = subcommands(pos[1])
		} else if len(pos) > 1 {
			cands = nil
		}
	case groups[pos[0]] != "":
		if len(pos) == 1 {
			cands = subcommands(pos[0])
		} else {
			cmd = findCommand(pos[0] + " " + pos[1])
		}
	default:
		cmd = findCommand(pos[0])
	}
	if strings.HasPrefix(cur, "-") {
		cands = []string{"--help"}
		if cmd != nil {
			fs, _, _ := cmd.flags(env)
			fs.VisitAll(func(f *flag.Flag) { cands = append(cands, "--"+f.Name) })
		} else if len(pos) == 0 {
			cands = append(cands, "--version")
		}
	} else if cmd == completionCommand && len(pos) == 1 {
		cands = []string{"bash", "zsh"}
	} else if cmd != nil {
		cands = nil // positional arguments: ids or files, which the shell handles
	}
	for _, c := range cands {
		if strings.HasPrefix(c, cur) {
			fmt.Fprintln(env.Stdout, c)
		}
	}
	return nil
}
