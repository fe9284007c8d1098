"""Update, condition and key-condition expressions with placeholders: the one way every part
of the adapter writes a request's expressions."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from core.aws.dynamodb.items import to_value

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+")


class Expression:
    """One request's update and condition expressions, with a placeholder for every
    attribute name (status and many others are reserved words) and every value."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, AttributeValueTypeDef] = {}
        self._placeholders: dict[str, str] = {}
        self._set: list[str] = []
        self._remove: list[str] = []
        self._add: list[str] = []
        self._conditions: list[str] = []

    def name(self, attribute: str) -> str:
        if attribute in self._placeholders:
            return self._placeholders[attribute]
        base = f"#{attribute}" if _PLAIN_NAME.fullmatch(attribute) else "#n"
        placeholder, suffix = base, 0
        while placeholder in self.names:
            suffix += 1
            placeholder = f"{base}{suffix}"
        self.names[placeholder] = attribute
        self._placeholders[attribute] = placeholder
        return placeholder

    def value(self, value: AttributeValueTypeDef | str | int) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = value if isinstance(value, dict) else to_value(value)
        return placeholder

    def assign(self, attribute: str, value: AttributeValueTypeDef | str | int | None) -> None:
        """SET the attribute, or REMOVE it when `value` is None."""
        if value is None:
            self._remove.append(self.name(attribute))
        else:
            self._set.append(f"{self.name(attribute)} = {self.value(value)}")

    def set(self, clause: str) -> None:
        self._set.append(clause)

    def add(self, attribute: str, amount: int) -> None:
        self._add.append(f"{self.name(attribute)} {self.value(amount)}")

    def condition(self, clause: str) -> None:
        self._conditions.append(clause)

    def equals(self, attribute: str, value: AttributeValueTypeDef | str | int | None) -> None:
        """Condition: the attribute has `value` (None: the attribute is absent)."""
        if value is None:
            self.condition(f"attribute_not_exists({self.name(attribute)})")
        else:
            self.condition(f"{self.name(attribute)} = {self.value(value)}")

    def update_expression(self) -> str:
        parts = [
            f"{verb} {', '.join(clauses)}"
            for verb, clauses in (("SET", self._set), ("REMOVE", self._remove), ("ADD", self._add))
            if clauses
        ]
        return " ".join(parts)

    def key_condition(self) -> str:
        return " AND ".join(self._conditions)

    def request(self) -> dict[str, Any]:
        """The expression parameters of a request (Update, ConditionExpression, names, values)."""
        params: dict[str, Any] = {}
        if update := self.update_expression():
            params["UpdateExpression"] = update
        if self._conditions:
            params["ConditionExpression"] = " AND ".join(f"({c})" for c in self._conditions)
        if self.names:
            params["ExpressionAttributeNames"] = self.names
        if self.values:
            params["ExpressionAttributeValues"] = self.values
        return params
