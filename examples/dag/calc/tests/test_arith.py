import unittest

from calc import arith


class ArithTest(unittest.TestCase):
    def test_add(self) -> None:
        self.assertEqual(arith.add(2, 3), 5)

    def test_divide_floors(self) -> None:
        self.assertEqual(arith.divide(7, 2), 3)

    def test_divide_by_zero_raises(self) -> None:
        with self.assertRaises(ValueError):
            arith.divide(1, 0)

    def test_mean(self) -> None:
        self.assertAlmostEqual(arith.mean([1, 2, 3, 4]), 2.5)

    def test_mean_of_empty_list_raises(self) -> None:
        with self.assertRaises(ValueError):
            arith.mean([])


if __name__ == "__main__":
    unittest.main()
