"""An Ollama Modelfile whose TEMPLATE renders conversations exactly as the stage's chat template does.

Ollama's templates are Go templates, the stage's is Jinja: no general translation exists. Most chat
templates (the one amigo-burst gives bases without one, ChatML, Llama 3, Phi, Zephyr) write each
message as PREFIX[role] + content + SUFFIX[role], then a generation prompt. `pieces()` reads those
strings off the Jinja template by rendering one- and two-message conversations, and `modelfile()`
keeps them only if re-assembling a four-message conversation (system, user, assistant, user)
gives the Jinja template's own rendering character for character; any other template is refused
(one line: write TEMPLATE by hand) rather than exported subtly wrong.

The BOS token the Jinja template writes stays in TEMPLATE only when llama.cpp does not add one
itself for this GGUF (its tokenizer.ggml.add_bos_token), so the model never sees two.
"""

from __future__ import annotations

from dataclasses import dataclass

from amigo_burst.errors import UserError

MARK = {"system": "SYSTEM_7f3a", "user": "USER_7f3a", "assistant": "ASSISTANT_7f3a", "user2": "USER2_7f3a"}


@dataclass(frozen=True)
class Pieces:
    bos: str
    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str  # what add_generation_prompt appends: the assistant's opening


def _render(tok, msgs: list[dict], gen: bool = False) -> str:
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)


def _split(text: str, mark: str) -> tuple[str, str]:
    if text.count(mark) != 1:
        raise UserError("the chat template does not write each message once, as it is")
    head, tail = text.split(mark)
    return head, tail


def pieces(tok) -> Pieces:
    user = [{"role": "user", "content": MARK["user"]}]
    u = _render(tok, user)  # BOS + P[user] + U + S[user]
    head, s_user = _split(u, MARK["user"])
    bos = tok.bos_token if tok.bos_token and head.startswith(tok.bos_token) else ""
    p_user = head[len(bos):]
    ug = _render(tok, user, gen=True)
    ua = _render(tok, user + [{"role": "assistant", "content": MARK["assistant"]}])
    if not (ug.startswith(u) and ua.startswith(u)):
        raise UserError("the chat template is not a concatenation of messages")
    p_asst, s_asst = _split(ua[len(u):], MARK["assistant"])
    prefix, suffix = {"user": p_user, "assistant": p_asst}, {"user": s_user, "assistant": s_asst}
    try:
        su = _render(tok, [{"role": "system", "content": MARK["system"]}] + user)
    except Exception:  # noqa: BLE001 - a template without a system role (Jinja raise_exception)
        su = None
    if su is not None:  # a system turn must be a message of its own too (Mistral's merge into the user turn is not)
        if not (su.startswith(bos) and su.endswith(u[len(bos):])):
            raise UserError("the chat template does not write the system message as a message of its own")
        prefix["system"], suffix["system"] = _split(su[len(bos):len(su) - len(u) + len(bos)], MARK["system"])
    return Pieces(bos, prefix, suffix, ug[len(u):])


def go_template(p: Pieces, with_bos: bool) -> str:
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{p.prefix[role]}{{{{ .Content }}}}{p.suffix[role]}'
        for i, role in enumerate(r for r in ("system", "user", "assistant") if r in p.prefix))
    return (p.bos if with_bos else "") + "{{ range .Messages }}" + branches + "{{ end }}{{ end }}" + p.generation


def assemble(p: Pieces, msgs: list[dict], with_bos: bool = True) -> str:
    """What go_template renders for msgs (the Go template is this loop, written in Go's syntax)."""
    body = "".join(p.prefix[m["role"]] + m["content"] + p.suffix[m["role"]] for m in msgs if m["role"] in p.prefix)
    return (p.bos if with_bos else "") + body + p.generation


def modelfile(gguf: str, tok, adds_bos: bool) -> str:
    """FROM, TEMPLATE (checked against the Jinja template), and stop at the end of a turn."""
    p = pieces(tok)
    convo = [{"role": "user", "content": MARK["user"]}, {"role": "assistant", "content": MARK["assistant"]},
             {"role": "user", "content": MARK["user2"]}]
    if "system" in p.prefix:
        convo.insert(0, {"role": "system", "content": MARK["system"]})
    if assemble(p, convo) != _render(tok, convo, gen=True):
        raise UserError("this chat template is not a plain per-message concatenation, so no Ollama TEMPLATE "
                        "renders it the same: export --format gguf and write the Modelfile's TEMPLATE by hand")
    template = go_template(p, with_bos=not adds_bos)
    if '"""' in template or "{{" in "".join([*p.prefix.values(), *p.suffix.values(), p.generation, p.bos]):
        raise UserError("the chat template's text cannot be quoted in a Modelfile: write TEMPLATE by hand")
    lines = [f"FROM {gguf}", f'TEMPLATE """{template}"""']
    lines += [f'PARAMETER stop "{s}"' for s in stop_tokens(tok, p)]
    return "\n".join(lines) + "\n"


def stop_tokens(tok, p: Pieces | None = None) -> list[str]:
    """Where an answer ends: the end-of-sequence token and the next user turn's opening. The Modelfile
    says these, and export's parity check generates with them (llama.cpp and transformers alike). A
    template the Modelfile cannot carry (pieces() refuses it): the end-of-sequence token alone."""
    if p is None:
        try:
            p = pieces(tok)
        except UserError:
            return [tok.eos_token] if tok.eos_token else []
    stops = [s for s in (tok.eos_token, p.prefix["user"].strip()) if s]
    return [s for s in dict.fromkeys(stops) if '"' not in s]
