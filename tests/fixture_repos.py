"""Small git repositories with known bugs, and SWE-bench rows for them.

build(root) makes one repository per project under root/src/<owner>/<name> (the URL
template root/src/{repo} serves them by path) and returns the dataset rows: instance_id,
repo, base_commit, problem_statement, patch (the reference fix, from `git diff`). Used by
the tests and by benchmarks/context_recall.py.
"""
import subprocess
import textwrap
from pathlib import Path

GIT_IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]


def git(repo, *args):
    return subprocess.run(["git", *GIT_IDENTITY, *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def commit_files(repo, files, message):
    """Write files ({path: text}) into repo, commit them, return the commit id."""
    for path, text in files.items():
        target = Path(repo) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD").strip()


def reference_patch(repo, fix):
    """The diff of the fix ({path: (old text, new text), or a list of such pairs}), left uncommitted."""
    for path, edits in fix.items():
        target = Path(repo) / path
        text = target.read_text()
        for old, new in edits if isinstance(edits, list) else [edits]:
            assert old in text, f"{path}: the fix's old text is not in the file"
            text = text.replace(old, new, 1)
        target.write_text(text)
    git(repo, "add", "-A")
    patch = git(repo, "diff", "--cached")
    git(repo, "reset", "-q", "--hard")
    return patch


def code(text):
    return textwrap.dedent(text).lstrip("\n")


GEOMETRY = {
    "README.md": "# geometry\n\nShapes, vectors and transforms for 2D drawings.\n",
    "geometry/__init__.py": code('''
        from geometry.shapes import Circle, Rectangle, Square, Triangle
        from geometry.transforms import rotate, scale, translate
        from geometry.vectors import Vector2

        __all__ = ["Circle", "Rectangle", "Square", "Triangle", "Vector2", "rotate", "scale", "translate"]
        '''),
    "geometry/shapes.py": code('''
        """Plane shapes with their area and perimeter."""
        import math


        class Shape:
            def area(self):
                raise NotImplementedError

            def perimeter(self):
                raise NotImplementedError

            def describe(self):
                return f"{type(self).__name__} with area {self.area():.2f}"


        class Circle(Shape):
            def __init__(self, radius):
                if radius < 0:
                    raise ValueError("radius must not be negative")
                self.radius = radius

            def area(self):
                return math.pi * self.radius ** 2

            def perimeter(self):
                return math.pi * self.radius


        class Rectangle(Shape):
            def __init__(self, width, height):
                self.width = width
                self.height = height

            def area(self):
                return self.width * self.height

            def perimeter(self):
                return 2 * (self.width + self.height)


        class Square(Rectangle):
            def __init__(self, side):
                super().__init__(side, side)


        class Triangle(Shape):
            def __init__(self, a, b, c):
                if a + b <= c or a + c <= b or b + c <= a:
                    raise ValueError("the sides do not make a triangle")
                self.sides = (a, b, c)

            def perimeter(self):
                return sum(self.sides)

            def area(self):
                s = self.perimeter() / 2
                a, b, c = self.sides
                return math.sqrt(s * (s - a) * (s - b) * (s - c))
        '''),
    "geometry/vectors.py": code('''
        """Two-dimensional vectors."""
        import math


        class Vector2:
            def __init__(self, x, y):
                self.x = x
                self.y = y

            def __add__(self, other):
                return Vector2(self.x + other.x, self.y + other.y)

            def __sub__(self, other):
                return Vector2(self.x - other.x, self.y - other.y)

            def __mul__(self, factor):
                return Vector2(self.x * factor, self.y * factor)

            def __eq__(self, other):
                return (self.x, self.y) == (other.x, other.y)

            def dot(self, other):
                return self.x * other.x + self.y * other.y

            def norm(self):
                """Euclidean length of the vector."""
                return self.x * self.x + self.y * self.y

            def normalized(self):
                length = self.norm()
                if length == 0:
                    raise ZeroDivisionError("cannot normalise the zero vector")
                return Vector2(self.x / length, self.y / length)

            def angle(self):
                return math.atan2(self.y, self.x)
        '''),
    "geometry/transforms.py": code('''
        """Affine transforms of points given as (x, y) tuples."""
        import math


        def translate(point, dx, dy):
            x, y = point
            return (x + dx, y + dy)


        def scale(point, factor, origin=(0, 0)):
            x, y = point
            ox, oy = origin
            return (ox + (x - ox) * factor, oy + (y - oy) * factor)


        def rotate(point, degrees, origin=(0, 0)):
            """Rotate point counter-clockwise by `degrees` around origin."""
            x, y = point
            ox, oy = origin
            cos, sin = math.cos(degrees), math.sin(degrees)
            dx, dy = x - ox, y - oy
            return (ox + dx * cos - dy * sin, oy + dx * sin + dy * cos)
        '''),
    "geometry/units.py": code('''
        """Length units and conversions between them."""

        MILLIMETRES_PER_UNIT = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "in": 25.4, "ft": 304.8}


        def convert(value, from_unit, to_unit):
            try:
                return value * MILLIMETRES_PER_UNIT[from_unit] / MILLIMETRES_PER_UNIT[to_unit]
            except KeyError as e:
                raise ValueError(f"unknown unit {e.args[0]!r}") from None
        '''),
    "geometry/io.py": code('''
        """Read shapes from text lines such as "circle 2" or "rectangle 3 4"."""
        from geometry.shapes import Circle, Rectangle, Square, Triangle

        KINDS = {"circle": Circle, "rectangle": Rectangle, "square": Square, "triangle": Triangle}


        def parse_shape(line):
            kind, *numbers = line.split()
            try:
                cls = KINDS[kind.lower()]
            except KeyError:
                raise ValueError(f"unknown shape {kind!r}") from None
            return cls(*(float(n) for n in numbers))


        def parse_shapes(text):
            return [parse_shape(line) for line in text.splitlines() if line.strip() and not line.startswith("#")]
        '''),
    "tests/test_shapes.py": code('''
        from geometry.shapes import Circle, Square


        def test_square_area():
            assert Square(3).area() == 9


        def test_circle_area():
            assert round(Circle(1).area(), 5) == 3.14159
        '''),
}

TEXTKIT = {
    "README.rst": "textkit\n=======\n\nSmall helpers for text: slugs, wrapping, case conversion.\n",
    "textkit/__init__.py": "from textkit.case import camel_to_snake, snake_to_camel\nfrom textkit.slugify import slugify\n"
                           "from textkit.wrap import wrap\n",
    "textkit/slugify.py": code('''
        """URL slugs."""
        import re
        import unicodedata


        def slugify(text, separator="-"):
            """Lowercase ASCII words of text joined by separator: "Hello World!" -> "hello-world"."""
            text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
            text = re.sub(r"[^\\w\\s-]", "", text).strip().lower()
            return re.sub(r"[\\s]+", separator, text)
        '''),
    "textkit/wrap.py": code('''
        """Wrap paragraphs to a given width."""


        def wrap(text, width=70):
            """Lines of at most `width` characters, broken between words."""
            lines, current = [], ""
            for word in text.split():
                candidate = f"{current} {word}" if current else word
                if len(candidate) <= width + 1:
                    current = candidate
                else:
                    lines.append(current)
                    current = word
            if current:
                lines.append(current)
            return lines


        def fill(text, width=70):
            return "\\n".join(wrap(text, width))
        '''),
    "textkit/case.py": code('''
        """Conversions between snake_case and CamelCase identifiers."""
        import re


        def snake_to_camel(name):
            return "".join(part.capitalize() for part in name.split("_") if part)


        def camel_to_snake(name):
            """CamelCase -> camel_case."""
            return re.sub(r"(?<!^)([A-Z])", r"_\\1", name).lower()
        '''),
    "textkit/tokens.py": code('''
        """Split text into words and sentences."""
        import re

        WORD = re.compile(r"[\\w']+")
        SENTENCE_END = re.compile(r"(?<=[.!?])\\s+")


        def words(text):
            return WORD.findall(text)


        def sentences(text):
            return [s for s in SENTENCE_END.split(text.strip()) if s]


        def word_count(text):
            return len(words(text))
        '''),
    "textkit/cli.py": code('''
        """Command line: textkit slug|wrap|snake TEXT."""
        import argparse

        from textkit import camel_to_snake, slugify, wrap


        def main(argv=None):
            parser = argparse.ArgumentParser(prog="textkit")
            parser.add_argument("command", choices=["slug", "wrap", "snake"])
            parser.add_argument("text")
            parser.add_argument("--width", type=int, default=70)
            args = parser.parse_args(argv)
            if args.command == "slug":
                print(slugify(args.text))
            elif args.command == "wrap":
                print("\\n".join(wrap(args.text, args.width)))
            else:
                print(camel_to_snake(args.text))
        '''),
}

LEDGER = {
    "README.md": "# ledger\n\nAccounts, money amounts and monthly reports.\n",
    "ledger/__init__.py": "",
    "ledger/money.py": code('''
        """Amounts of money in one currency, kept to the cent."""


        class Money:
            def __init__(self, amount, currency="EUR"):
                self.amount = round(float(amount), 2)
                self.currency = currency

            def __add__(self, other):
                return Money(self.amount + other.amount, self.currency)

            def __sub__(self, other):
                return Money(self.amount - other.amount, self.currency)

            def __lt__(self, other):
                return self.amount < other.amount

            def __eq__(self, other):
                return (self.amount, self.currency) == (other.amount, other.currency)

            def __repr__(self):
                return f"Money({self.amount:.2f}, {self.currency!r})"
        '''),
    "ledger/accounts.py": code('''
        """Accounts and transfers between them."""
        from ledger.money import Money


        class InsufficientFunds(Exception):
            pass


        class Account:
            def __init__(self, owner, currency="EUR"):
                self.owner = owner
                self.balance = Money(0, currency)
                self.history = []

            def deposit(self, amount):
                self.balance = self.balance + amount
                self.history.append(("deposit", amount))

            def withdraw(self, amount):
                if self.balance < amount:
                    raise InsufficientFunds(f"{self.owner} has {self.balance}")
                self.balance = self.balance - amount
                self.history.append(("withdraw", amount))


        def transfer(source, target, amount):
            """Move amount from source to target."""
            source.withdraw(amount)
            target.deposit(amount)
        '''),
    "ledger/report.py": code('''
        """Reports over (date, amount) transactions."""
        from collections import defaultdict


        def monthly_totals(transactions):
            """Sum of the amounts per (year, month)."""
            totals = defaultdict(float)
            for when, amount in transactions:
                totals[(when.year, when.day)] += amount
            return dict(sorted(totals.items()))


        def format_report(totals):
            return "\\n".join(f"{year}-{month:02d}: {total:10.2f}" for (year, month), total in totals.items())
        '''),
    "ledger/parser.py": code('''
        """Read transactions from CSV text: date,amount,description."""
        import csv
        import datetime
        import io


        def parse_transactions(text):
            rows = csv.reader(io.StringIO(text))
            return [(datetime.date.fromisoformat(date), float(amount)) for date, amount, *_ in rows]
        '''),
}

PROJECTS = {"acme/geometry": GEOMETRY, "acme/textkit": TEXTKIT, "acme/ledger": LEDGER}

# (instance_id, repo, problem statement, fix {path: (old text, new text)})
INSTANCES = [
    ("acme__geometry-1", "acme/geometry", code('''
        Circle.perimeter() is half of what it should be

        `Circle(1).perimeter()` gives 3.14159 but the circumference of a circle of radius 1 is 2*pi,
        6.28318. Rectangle and Triangle are right.
        '''), {"geometry/shapes.py": ("return math.pi * self.radius\n", "return 2 * math.pi * self.radius\n")}),
    ("acme__geometry-2", "acme/geometry", code('''
        Vector2.norm() returns the squared length

        ```python
        >>> Vector2(3, 4).norm()
        25
        ```
        The Euclidean norm of (3, 4) is 5. normalized() is wrong too since it divides by the norm.
        '''), {"geometry/vectors.py": ("return self.x * self.x + self.y * self.y\n",
                                       "return math.hypot(self.x, self.y)\n")}),
    ("acme__geometry-3", "acme/geometry", code('''
        rotate() treats the angle as radians

        The docstring of rotate says the point is rotated by `degrees`, but rotate((1, 0), 90) gives
        (-0.448, 0.894) instead of (0, 1). The angle has to be converted with math.radians first.
        '''), {"geometry/transforms.py": ("cos, sin = math.cos(degrees), math.sin(degrees)",
                                          "cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))")}),
    ("acme__textkit-1", "acme/textkit", code('''
        slugify keeps runs of hyphens

        slugify("Hello -- World") returns "hello----world"; a slug should never contain two separators
        in a row. Expected "hello-world".
        '''), {"textkit/slugify.py": ('return re.sub(r"[\\s]+", separator, text)',
                                      'return re.sub(r"[\\s-]+", separator, text)')}),
    ("acme__textkit-2", "acme/textkit", code('''
        wrap() makes lines one character longer than width

        With width=10, wrap("aaaa bbbbb cc") gives ["aaaa bbbbb", "cc"], whose first line has 10
        characters, fine, but wrap("aaaaa bbbbb") gives a line of 11 characters.
        '''), {"textkit/wrap.py": ("if len(candidate) <= width + 1:", "if len(candidate) <= width:")}),
    ("acme__textkit-3", "acme/textkit", code('''
        camel_to_snake splits acronyms letter by letter

        camel_to_snake("HTTPServer") returns "h_t_t_p_server"; it should be "http_server", as
        inflection and other libraries do.
        '''), {"textkit/case.py": ('return re.sub(r"(?<!^)([A-Z])", r"_\\1", name).lower()',
                                   'name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\\1_\\2", name)\n'
                                   '    return re.sub(r"([a-z0-9])([A-Z])", r"\\1_\\2", name).lower()')}),
    ("acme__ledger-1", "acme/ledger", code('''
        Money rounds half a cent to even

        Money(0.125) is 0.12 and Money(2.675) is 2.67: amounts should round half up, as accountants do,
        so these should be 0.13 and 2.68. Python's round() is not the right tool here; decimal is.
        '''), {"ledger/money.py": [('"""Amounts of money in one currency, kept to the cent."""\n',
                                   '"""Amounts of money in one currency, kept to the cent."""\n'
                                   'from decimal import ROUND_HALF_UP, Decimal\n'),
                                  ("self.amount = round(float(amount), 2)",
                                   'self.amount = float(Decimal(str(amount)).quantize(Decimal("0.01"), '
                                   'rounding=ROUND_HALF_UP))')]}),
    ("acme__ledger-2", "acme/ledger", code('''
        monthly_totals groups transactions by day of the month

        Two transactions on 2024-01-05 and 2024-02-05 end up in the same total, and the report prints
        months like "2024-31". The key should be the month, not the day.
        '''), {"ledger/report.py": ("totals[(when.year, when.day)] += amount", "totals[(when.year, when.month)] += amount")}),
    ("acme__ledger-3", "acme/ledger", code('''
        transfer between accounts of different currencies silently mixes them

        Transferring Money(10, "USD") from a USD account to a EUR account adds 10 to the EUR balance.
        Adding Money of two currencies should raise a CurrencyMismatch error, and transfer should refuse
        accounts whose currencies differ.
        '''), {"ledger/money.py": ('class Money:\n', 'class CurrencyMismatch(ValueError):\n    pass\n\n\nclass Money:\n'),
               "ledger/accounts.py": [("from ledger.money import Money", "from ledger.money import CurrencyMismatch, Money"),
                                      ('    source.withdraw(amount)\n',
                                      '    if source.balance.currency != target.balance.currency:\n'
                                      '        raise CurrencyMismatch("accounts hold different currencies")\n'
                                      '    source.withdraw(amount)\n')]}),
]


def build(root, extra_files=None):
    """Create the repositories under root/src and return (rows, repo_url template).
    extra_files ({path: text}) go into every repository, as distractors for retrieval."""
    rows, bases = [], {}
    for repo, files in PROJECTS.items():
        path = Path(root) / "src" / repo
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "main")
        bases[repo] = commit_files(path, {**(extra_files or {}), **files}, "first version")
    for instance_id, repo, problem, fix in INSTANCES:
        patch = reference_patch(Path(root) / "src" / repo, fix)
        rows.append({"instance_id": instance_id, "repo": repo, "base_commit": bases[repo],
                     "problem_statement": problem, "patch": patch})
    return rows, f"{Path(root) / 'src'}/{{repo}}"


def edit_blocks(patch):
    """The reference patch written as search/replace edit blocks, one per hunk."""
    from unidiff import PatchSet

    blocks = []
    for patched in PatchSet(patch):
        for hunk in patched:
            search = "".join(line.value for line in hunk if not line.is_added)
            replace = "".join(line.value for line in hunk if not line.is_removed)
            blocks.append(f"{patched.path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n")
    return "\n".join(blocks)


def retrieval_text(files):
    """A prompt laid out as in SWE-bench's retrieval datasets' `text` (numbered lines), holding files {path: text}."""
    blocks = []
    for path, content in files.items():
        numbered = "\n".join(f"{n} {line}" for n, line in enumerate(content.split("\n"), 1))
        blocks.append(f"[start of {path}]\n{numbered}\n[end of {path}]")
    return ("You will be provided with a partial code base and an issue statement explaining a problem to resolve.\n"
            "<issue>\nsomething\n</issue>\n\n<code>\n" + "\n".join(blocks) + "\n</code>\n\nHere is an example\n")
