"""Reading dashboard pages in tests: their forms (action, hidden fields) and whether every
visible input has a label, parsed with the standard library's HTML parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)  # hidden inputs
    buttons: list[str] = field(default_factory=list)  # visible names


class Page(HTMLParser):
    """The forms, labelled ids, input ids and scripts of one HTML page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.labels: set[str] = set()
        self.controls: list[tuple[str, str | None]] = []  # (tag, id) of visible controls
        self.scripts: list[str] = []
        self._in_button = False
        self._in_script = False
        self._button_text = ""
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append(Form(a.get("action") or "", (a.get("method") or "get").lower()))
        elif tag == "label" and a.get("for"):
            self.labels.add(a["for"] or "")
        elif tag == "input":
            kind = (a.get("type") or "text").lower()
            if kind == "hidden":
                if self.forms and a.get("name"):
                    self.forms[-1].fields[a["name"] or ""] = a.get("value") or ""
            else:
                self.controls.append((tag, a.get("id")))
        elif tag in ("select", "textarea"):
            self.controls.append((tag, a.get("id")))
        elif tag == "button":
            self._in_button, self._button_text = True, ""
        elif tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._in_button:
            self._in_button = False
            if self.forms:
                self.forms[-1].buttons.append(self._button_text.strip())
        elif tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_button:
            self._button_text += data
        if self._in_script:
            self.scripts[-1] += data

    def form(self, action: str) -> Form:
        found = [f for f in self.forms if f.action == action]
        assert found, f"no form posting to {action}: {[f.action for f in self.forms]}"
        return found[0]

    def unlabelled(self) -> list[tuple[str, str | None]]:
        """Visible inputs, selects and text areas without a <label for> naming them."""
        return [(tag, id_) for tag, id_ in self.controls if not id_ or id_ not in self.labels]
