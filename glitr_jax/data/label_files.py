"""Parsers for the label and split files of the raw releases (and the TSM frame-folder lists).

Every parse error names the file, the line (or JSON entry) and the problem. A video whose label is
not in the class list is not a parse error of the whole file: parsers return it with label -1 and
its problem, and the builder raises or skips it (`skip_bad_videos`).
"""

import dataclasses
import json
import os

from glitr_jax.data import errors

# SSv2's class names are its templates with the square brackets removed (docs/design.md 4.1).
_BRACKETS = str.maketrans('', '', '[]')


class LabelFileError(errors.FileProblemError):
  """A label, split or list file that is missing or does not parse."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One video of a split file.

  Attributes:
    video_id: the id (file or folder name without extension).
    label: class index, or -1 when the label is not in the class list (see `problem`).
    num_frames: frame count from a TSM list file; -1 when the file does not say.
    problem: why the entry is bad ('' for a good entry).
  """

  video_id: str
  label: int
  num_frames: int = -1
  problem: str = ''


def _read_text(path: str) -> str:
  try:
    with open(path, encoding='utf-8') as f:
      return f.read()
  except FileNotFoundError as e:
    raise LabelFileError(path, 'file not found') from e
  except UnicodeDecodeError as e:
    raise LabelFileError(path, f'not UTF-8 text ({e})') from e


def _read_json(path: str):
  try:
    return json.loads(_read_text(path))
  except json.JSONDecodeError as e:
    raise LabelFileError(path, f'invalid JSON at line {e.lineno} column {e.colno}: {e.msg}') from e


def _lines(path: str) -> list[tuple[int, str]]:
  """Non-empty lines with their 1-based numbers, whitespace stripped."""
  out = []
  for number, line in enumerate(_read_text(path).splitlines(), start=1):
    line = line.strip()
    if line:
      out.append((number, line))
  return out


def ssv2_class_names(path: str) -> tuple[str, ...]:
  """Class names of `something-something-v2-labels.json` ({name: "index"}) in index order.

  Raises:
    LabelFileError: the file is not a JSON object of names to distinct indices 0..C-1.
  """
  data = _read_json(path)
  if not isinstance(data, dict) or not data:
    raise LabelFileError(path, 'expected a non-empty JSON object {class name: index}')
  by_index = {}
  for name, index in data.items():
    try:
      index = int(index)
    except (TypeError, ValueError) as e:
      raise LabelFileError(path, f'class {name!r} has a non-integer index {index!r}') from e
    if index in by_index:
      raise LabelFileError(path, f'index {index} given to both {by_index[index]!r} and {name!r}')
    by_index[index] = name
  if sorted(by_index) != list(range(len(by_index))):
    raise LabelFileError(path, f'indices must be 0..{len(by_index) - 1} without gaps')
  return tuple(by_index[i] for i in range(len(by_index)))


def ssv2_split(path: str, class_names: tuple[str, ...]) -> list[Entry]:
  """Entries of `something-something-v2-{train,validation}.json`.

  Each item is `{"id", "label", "template", "placeholders"}`; the class is the template with its
  square brackets removed.

  Raises:
    LabelFileError: the file is not a JSON list of such objects.
  """
  data = _read_json(path)
  if not isinstance(data, list):
    raise LabelFileError(path, 'expected a JSON list of {"id", "template", ...} objects')
  index = {name: i for i, name in enumerate(class_names)}
  entries = []
  for i, item in enumerate(data):
    if not isinstance(item, dict) or 'id' not in item or 'template' not in item:
      raise LabelFileError(path, f'entry {i} is not an object with "id" and "template": {item!r}')
    name = str(item['template']).translate(_BRACKETS)
    entries.append(_named_entry(str(item['id']), name, index, f'entry {i}: template'))
  return entries


def _named_entry(video_id: str, name: str, index: dict[str, int], where: str) -> Entry:
  """The entry of a video labelled by class name; an unknown name is its problem, not an error
  (the builder skips or stops on it, as `skip_bad_videos` says)."""
  if name in index:
    return Entry(video_id, index[name])
  return Entry(video_id, -1, problem=f'{where} {name!r} is not a class of the labels file')


def _unique_names(path: str) -> list[str]:
  """The lines of a class-name file.

  Raises:
    LabelFileError: the file is empty or lists a name twice.
  """
  names = [line for _, line in _lines(path)]
  if not names:
    raise LabelFileError(path, 'no class names')
  if len(set(names)) != len(names):
    dupes = sorted({n for n in names if names.count(n) > 1})
    raise LabelFileError(path, f'class names listed more than once: {dupes}')
  return names


def jester_class_names(path: str) -> tuple[str, ...]:
  """Class names of `jester-v1-labels.csv` (one a line), sorted alphabetically.

  The official GliTr/TSM pipeline indexes Jester's classes in sorted order (docs/design.md 4.1),
  not in the order of this file.

  Raises:
    LabelFileError: the file is empty or lists a name twice.
  """
  return tuple(sorted(_unique_names(path)))


def jester_split(path: str, class_names: tuple[str, ...]) -> list[Entry]:
  """Entries of `jester-v1-{train,validation}.csv` (lines `id;label`).

  Raises:
    LabelFileError: naming the line that is not `id;label`.
  """
  index = {name: i for i, name in enumerate(class_names)}
  entries = []
  for number, line in _lines(path):
    video_id, sep, name = line.partition(';')
    video_id, name = video_id.strip(), name.strip()
    if not sep or not video_id or not name or ';' in name:
      raise LabelFileError(path, f'line {number} is not "id;label": {line!r}')
    entries.append(_named_entry(video_id, name, index, f'line {number}: label'))
  return entries


def category_names(path: str) -> tuple[str, ...]:
  """Class names of a TSM `category.txt` (one a line, in index order).

  Raises:
    LabelFileError: the file is empty or lists a name twice.
  """
  return tuple(_unique_names(path))


def tsm_list(path: str, num_classes: int) -> list[Entry]:
  """Entries of a TSM list file (`train_videofolder.txt`): lines `<folder> <num_frames> <label>`.

  The folder may contain spaces (the last two fields are split off from the right).

  Raises:
    LabelFileError: naming the line that does not have that form.
  """
  entries = []
  for number, line in _lines(path):
    parts = line.rsplit(maxsplit=2)
    try:
      folder, num_frames, label = parts[0], int(parts[1]), int(parts[2])
    except (IndexError, ValueError) as e:
      raise LabelFileError(
        path, f'line {number} is not "<folder> <num_frames> <label>": {line!r}'
      ) from e
    if 0 <= label < num_classes:
      entries.append(Entry(folder, label, num_frames))
    else:
      problem = f'line {number}: label {label} is not in 0..{num_classes - 1} (category file)'
      entries.append(Entry(folder, -1, num_frames, problem=problem))
  return entries


def missing_files(root: str, names: tuple[str, ...]) -> list[str]:
  """The paths of `names` under `root` that do not exist."""
  return [os.path.join(root, n) for n in names if not os.path.exists(os.path.join(root, n))]
