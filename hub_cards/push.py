"""Upload an exported folder to the Hub with `huggingface_hub`'s own API: create the repository, then upload the
folder in one commit whose message names the run. Refused before any network call when the folder holds pickled
weights, its card fails validation, or it does not reload in a fresh process. `dry_run=True` stops after the
checks and lists what would be uploaded."""

from pathlib import Path

from huggingface_hub import HfApi, ModelCard

from .card import card_problems
from .export import pickled_files
from .reload_check import reload_problems

IGNORED = (".git", "__pycache__", ".cache")


def folder_files(folder) -> list:
    """(relative path, size in bytes) of every file `upload_folder` would send."""
    folder = Path(folder)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return [(str(p.relative_to(folder)), p.stat().st_size) for p in files
            if not any(part in IGNORED for part in p.relative_to(folder).parts)]


def folder_problems(folder, reload: bool = True) -> list:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return [f"{folder}: not an exported model folder (no config.json); run `medvl export` first"]
    problems = [f"pickled file refused: {name}" for name in pickled_files(folder)]
    if not any(folder.glob("*.safetensors")):
        problems.append("no safetensors weights")
    problems += card_problems(folder)
    if reload and not problems:
        problems += reload_problems(folder)
    return problems


def commit_message(folder) -> str:
    data = ModelCard.load(Path(folder) / "README.md").data.to_dict()
    run = (data.get("medvl") or {}).get("run")
    return f"Upload MedVL model from run {run}" if run else "Upload MedVL model"


def push_folder(folder, repo_id: str, dry_run: bool = False, private: bool = False, token=None,
                reload: bool = True) -> dict:
    """Check `folder`, then (unless `dry_run`) create `repo_id` and upload the folder in one commit."""
    if repo_id.count("/") != 1:
        raise ValueError(f"--repo {repo_id!r}: expected 'org/name'")
    problems = folder_problems(folder, reload=reload)
    if problems:
        raise ValueError("refusing to push: " + "; ".join(problems))
    files = folder_files(folder)
    report = {"repo_id": repo_id, "files": files, "total_bytes": sum(size for _, size in files),
              "commit_message": commit_message(folder), "dry_run": dry_run}
    if dry_run:
        return report
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                               commit_message=report["commit_message"], ignore_patterns=[f"{n}/*" for n in IGNORED])
    report["commit_url"] = str(getattr(commit, "commit_url", commit))
    return report


__all__ = ["commit_message", "folder_files", "folder_problems", "push_folder"]
