"""What every part of the command line shares: the user-error exception, the
file checks and the way a list of names is shown in a message."""
import os


class CLIError(Exception):
    """A user error: printed as one line, exit status 1, no traceback."""


def check_exists(path):
    """A CLIError unless path names an existing file (not a folder)."""
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, not a data file")


def check_out_folder(path, option="--out"):
    """Fail before the work, not after, when ``path`` cannot be written:
    its folder must exist and it must not be a folder itself."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError(f"{option} {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"{option} {path}: is a directory; give a file name")


def list_names(names, limit=8):
    """``a, b, c`` for a message; a long list shows its start and its end."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit - 2]) + f", ... , {names[-1]}"
