"""The error a raw release's file raises when it cannot be used: it names the file and why."""


class FileProblemError(ValueError):
  """A file of a raw release that cannot be read as expected.

  Attributes:
    path: the file.
    problem: what is wrong with it, in words.
  """

  def __init__(self, path: str, problem: str):
    super().__init__(f'{path}: {problem}')
    self.path = path
    self.problem = problem

  def __reduce__(self):
    # Keeps the two arguments when the error crosses a process boundary (decoding workers).
    return (type(self), (self.path, self.problem))
