"""The state cell drawn as a coloured badge, so a selected row still shows its state's colour.

A plain background colour is painted over by the selection highlight (Fusion and Nuke's own style
both do), so the one row the artist is looking at lost its colour. :class:`StateBadgeDelegate`
lets the view draw the cell as usual (highlight, focus) without the background, then paints a
rounded badge of the state colour on top. Its outline is a darker shade of the state colour, and
on a selected row the palette's highlighted-text colour, so the badge stands apart even from a
highlight of the same hue (a blue selection on a busy server). Main (Qt) thread only.
"""

from __future__ import annotations

from typing import Optional

from comfy_cluster.ui.qt import QtCore, QtGui, QtWidgets

Qt = QtCore.Qt

#: Gap between the badge and the cell's edges, and the text's padding inside it, in pixels.
_MARGIN = 3
_PADDING = 8


class StateBadgeDelegate(QtWidgets.QStyledItemDelegate):
    """Paints ``colour_role`` (a ``QColor``) as a badge behind the cell's text.

    Used for the state column only; cells without a colour are painted as usual.
    """

    def __init__(self, colour_role: int, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self._colour_role = colour_role

    def paint(
        self,
        painter: QtGui.QPainter,
        option: QtWidgets.QStyleOptionViewItem,
        index: QtCore.QModelIndex,
    ) -> None:
        colour = index.data(self._colour_role)
        if not isinstance(colour, QtGui.QColor):
            super().paint(painter, option, index)
            return
        opt = QtWidgets.QStyleOptionViewItem(option)
        self.initStyleOption(opt, index)
        text = opt.text
        opt.text = ""
        opt.backgroundBrush = QtGui.QBrush()  # the badge shows the colour, not the background
        widget = opt.widget
        style = widget.style() if widget is not None else QtWidgets.QApplication.style()
        style.drawControl(QtWidgets.QStyle.ControlElement.CE_ItemViewItem, opt, painter, widget)

        badge = QtCore.QRectF(opt.rect).adjusted(_MARGIN, _MARGIN, -_MARGIN, -_MARGIN)
        painter.save()
        try:
            painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, True)
            selected = bool(opt.state & QtWidgets.QStyle.StateFlag.State_Selected)
            ring = (
                opt.palette.color(QtGui.QPalette.ColorRole.HighlightedText)
                if selected
                else colour.darker(170)
            )
            painter.setPen(QtGui.QPen(ring, 2.0 if selected else 1.0))
            painter.setBrush(colour)
            painter.drawRoundedRect(badge, 4.0, 4.0)
            foreground = index.data(Qt.ItemDataRole.ForegroundRole)
            pen_colour = (
                foreground.color()
                if isinstance(foreground, QtGui.QBrush)
                else QtGui.QColor("#ffffff")
            )
            painter.setPen(pen_colour)
            painter.setFont(opt.font)
            inner = badge.adjusted(_PADDING / 2, 0, -_PADDING / 2, 0)
            elided = opt.fontMetrics.elidedText(
                text, Qt.TextElideMode.ElideRight, int(inner.width())
            )
            painter.drawText(inner, int(Qt.AlignmentFlag.AlignCenter), elided)
        finally:
            painter.restore()

    def sizeHint(
        self, option: QtWidgets.QStyleOptionViewItem, index: QtCore.QModelIndex
    ) -> QtCore.QSize:
        """Room for the text plus the badge's margins and padding."""
        size = super().sizeHint(option, index)
        return QtCore.QSize(size.width() + 2 * _MARGIN + _PADDING, size.height() + 2 * _MARGIN)


__all__ = ["StateBadgeDelegate"]
