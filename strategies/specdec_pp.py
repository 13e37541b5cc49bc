"""SpecDec++ (Huang, Guo, Wang 2024) with its TRAINED acceptance-prediction head.

The draft keeps proposing while the predicted probability that at least one drafted token is
rejected, 1 - prod_i a_i, stays at or below `threshold` (0.3 in the paper), with K in
[k_min, k_max] = [2, 20]. a_i is the output of a small head on the draft's last hidden state
(after the final norm) AT THE POSITION OF THE DRAFTED TOKEN x_i, i.e. from the draft forward
that consumes x_i (the one that also yields the logits of x_{i+1}), as in the paper: the head
sees the token it judges. It predicts the probability that the target accepts x_i given that
x_1..x_{i-1} were accepted, so prod_i a_i is the predicted probability that all are accepted.
Cost: the forward that consumes the last draft token (which fixed-K speculative decoding skips)
is paid in each round; when every draft is accepted it is the next round's catch-up forward
anyway, so only rounds with a rejection pay one extra one-token draft forward.

The head (`AcceptanceHead`, a ResNet-style MLP as in the paper, with a bottleneck to keep the
file small) is trained by `python -m tools.train_acceptance_head` on the draft's own
hidden states over the target's own generations (see that module for the data, the labels and
the weighted BCE loss) and loaded from `head_path`. A head belongs to ONE draft model: its file
records the draft's name, number of layers and hidden size, and `setup()` (or the first
`generate`) refuses any other draft with a ConfigError. There is no fallback: without a head
file, use `strategy=specdec_pp_confidence` (training-free). Verification is standard
speculative sampling, so the method is lossless whatever the head predicts.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch

from harness.errors import ConfigError
from strategies.specdec_pp_confidence import SpecDecPP

ROOT = Path(__file__).resolve().parent.parent
HEAD_FORMAT = "harness-acceptance-head-v1"


class AcceptanceHead(torch.nn.Module):
    """Standardise -> [project the hidden part on `pca` directions] -> Linear(., width)
    -> `blocks` x [x + SiLU(Linear(width, width))] -> Linear(width, 1).

    The paper's head is a small ResNet of SiLU blocks on the draft's hidden state. Input: the
    hidden state [.., hidden_size], then `extra` = 2 optional features of the draft's proposal
    (log q(x), entropy of q) when trained with `--features hidden+q`. `pca` > 0 projects the
    standardised hidden state on its top principal directions of the training data first (a
    fixed buffer): with thousands rather than millions of training positions a head on all 896
    dimensions memorises its training set. Returns logits (sigmoid = a_i). Under 1 MB."""

    def __init__(self, hidden_size: int, width: int = 64, blocks: int = 2, extra: int = 0, pca: int = 0):
        super().__init__()
        self.hidden_size, self.width, self.n_blocks = int(hidden_size), int(width), int(blocks)
        self.extra, self.pca = int(extra), int(pca)
        d = self.hidden_size + self.extra
        self.register_buffer("mu", torch.zeros(d))
        self.register_buffer("sigma", torch.ones(d))
        self.register_buffer("proj", torch.eye(self.hidden_size)[:, : self.pca] if self.pca else torch.zeros(0))
        self.inp = torch.nn.Linear((self.pca or self.hidden_size) + self.extra, width)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(blocks))
        self.out = torch.nn.Linear(width, 1)
        self.input_dropout = 0.0  # set by the trainer while fitting

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [n, hidden_size + extra] (hidden state, then the extra features) -> the MLP's input."""
        z = (x.float() - self.mu) / self.sigma
        if self.pca:
            z = torch.cat([z[:, : self.hidden_size] @ self.proj, z[:, self.hidden_size:]], -1)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.features(x)
        if self.training and self.input_dropout:
            z = torch.nn.functional.dropout(z, self.input_dropout)
        z = self.inp(z)
        for blk in self.blocks:
            z = z + torch.nn.functional.silu(blk(z))
        return self.out(z).squeeze(-1)

    def arch(self) -> dict:
        return {"hidden_size": self.hidden_size, "width": self.width, "blocks": self.n_blocks, "extra": self.extra,
                "pca": self.pca}


def proposal_features(q_logits: torch.Tensor, x) -> torch.Tensor:
    """The draft's log q(x) and the entropy of q (softmax of its raw logits) for `--features hidden+q`:
    q_logits [..., V], x int or [...] -> [..., 2]. The one definition, used by training and decoding."""
    lsm = torch.log_softmax(q_logits.float(), -1)
    x = torch.as_tensor(x, device=lsm.device)
    return torch.stack([lsm.gather(-1, x[..., None])[..., 0], -(lsm.exp() * lsm).sum(-1)], -1)


def resolve_path(path) -> Path:
    """A relative head path is relative to the repository root (independent of the cwd)."""
    p = Path(str(path)).expanduser()
    return p if p.is_absolute() else ROOT / p


def save_head(path, head: AcceptanceHead, meta: dict) -> Path:
    path = resolve_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().float().clone() for k, v in head.state_dict().items()}
    meta = json.loads(json.dumps(meta))  # plain JSON types only: the file loads with weights_only=True
    torch.save({"format": HEAD_FORMAT, "arch": head.arch(), "state_dict": state, "meta": meta}, path)
    return path


def load_head(path) -> tuple[AcceptanceHead, dict, str]:
    """(head in eval mode, metadata, sha256 of the file); ConfigError on a missing or foreign file."""
    p = resolve_path(path)
    if not p.is_file():
        raise ConfigError(f"specdec_pp: acceptance head file {p} does not exist; train one with "
                          f"`python -m tools.train_acceptance_head --out {path}` (or use "
                          f"strategy=specdec_pp_confidence, the training-free variant)")
    blob = p.read_bytes()
    try:
        obj = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != HEAD_FORMAT:
            raise ValueError(f"format is not {HEAD_FORMAT}")
        head = AcceptanceHead(**obj["arch"])
        head.load_state_dict(obj["state_dict"])
    except Exception as e:  # noqa: BLE001 - any unreadable file is a configuration error
        raise ConfigError(f"specdec_pp: {p} is not an acceptance head file ({e.__class__.__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return head.eval(), dict(obj.get("meta", {})), hashlib.sha256(blob).hexdigest()


def draft_identity(engine) -> dict:
    """What a head is tied to: the draft's name, depth and hidden size."""
    return {"name": engine.name, "num_layers": int(engine.num_layers), "hidden_size": int(engine.hidden_size)}


class SpecDecPPHead(SpecDecPP):
    name = "specdec_pp"
    needs_artifact = True  # needs a head trained for its draft: the YAML-wide tiny-model tests skip it

    def __init__(self, draft, head_path=None, threshold: float = 0.3, k_min: int = 2, k_max: int = 20,
                 sampling=None, **drafting):
        super().__init__(draft, threshold=threshold, k_min=k_min, k_max=k_max, sampling=sampling, **drafting)
        if not head_path:
            raise ConfigError("specdec_pp: head_path is required (a file written by "
                              "`python -m tools.train_acceptance_head`); without a trained head "
                              "use strategy=specdec_pp_confidence")
        self.head_path = str(head_path)
        self.head, self.head_meta, self.head_sha256 = load_head(head_path)
        for key in ("name", "num_layers", "hidden_size"):
            if key not in self.head_meta.get("draft", {}):
                raise ConfigError(f"specdec_pp: head file {self.head_path} does not record its draft's {key}")
        self._checked = None  # id of the draft engine last checked against the head

    def params(self) -> dict:
        out = super().params()
        out.pop("_checked", None)
        m = self.head_meta
        out["head"] = {"draft": m.get("draft"), "heldout_auc": (m.get("heldout") or {}).get("auc"),
                       "temperature": (m.get("data") or {}).get("temperature"), "commit": m.get("commit")}
        return out

    def setup(self, target, draft=None) -> None:
        self.check_draft(draft)

    def check_draft(self, draft) -> None:
        if draft is None or self._checked == id(draft):
            return
        want, got = self.head_meta["draft"], draft_identity(draft)
        if got["hidden_size"] != want["hidden_size"]:
            raise ConfigError(f"specdec_pp: head {self.head_path} takes hidden states of size {want['hidden_size']} "
                              f"but draft {got['name']} has {got['hidden_size']}: train a head for this draft")
        if (got["name"], got["num_layers"]) != (want["name"], want["num_layers"]):
            raise ConfigError(f"specdec_pp: head {self.head_path} was trained on draft {want['name']} "
                              f"({want['num_layers']} layers), not {got['name']} ({got['num_layers']} layers)")
        self._checked = id(draft)

    def predict_accept(self, hidden: torch.Tensor, extra: torch.Tensor | None = None) -> float:
        x = hidden.float().cpu()
        if self.head.extra:
            x = torch.cat([x, extra])
        with torch.inference_mode():
            return float(torch.sigmoid(self.head(x[None]))[0])

    def decode(self, state):
        self.check_draft(state.draft)
        super().decode(state)

    def judge_layer(self, state) -> int:
        return state.draft.num_layers  # the head reads the draft's last hidden state (after the norm)

    def stopper(self, state):
        """a_i from the head on the draft's hidden state at x_i (x_i is fed first: judge_layer)."""
        p_all = [1.0]

        def stop(i, logits, q, x, hidden):
            a = self.predict_accept(hidden, proposal_features(logits, x) if self.head.extra else None)
            p_all[0] *= a
            state.count("head_calls")
            state.count("head_pred_sum", a)
            return i >= self.k_min and 1.0 - p_all[0] > self.threshold

        return stop
